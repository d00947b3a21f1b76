"""The inventory's state: items by SKU, and restock deliveries.

One :class:`Stock` lives in the process; the service (through a dependency provider) and
its admin app (a QuartTrio app) both use it. Everything that touches it runs in trio's
thread (``async def`` handlers only), so each method runs whole: no lock is needed.
"""

from __future__ import annotations

import itertools

import attrs
import trio


class StockError(Exception):
    """A request the inventory refuses; ``status_code`` says how."""

    status_code = 400


class UnknownItem(StockError):
    status_code = 404


class OutOfStock(StockError):
    status_code = 409


class InvalidInput(StockError):
    status_code = 400


@attrs.define
class Item:
    sku: str
    name: str
    quantity: int

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.define
class Delivery:
    id: int
    sku: str
    quantity: int
    delivered: bool = False

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


#: What a fresh inventory holds (``triosvc run`` starts with it; tests reset to it).
DEMO_ITEMS = (
    Item("bolt-m6", "M6 bolt", 120),
    Item("nut-m6", "M6 nut", 80),
    Item("washer-m6", "M6 washer", 3),
)


class Stock:
    """Items by SKU; ``version`` grows with every change, and changes can be awaited."""

    def __init__(self, items: tuple[Item, ...] = DEMO_ITEMS) -> None:
        self.reset(items)

    def reset(self, items: tuple[Item, ...] = DEMO_ITEMS) -> None:
        self.items = {item.sku: attrs.evolve(item) for item in items}
        self.deliveries: dict[int, Delivery] = {}
        self._ids = itertools.count(1)
        self.version = 0
        self._changed = trio.Event()

    # -- reading ---------------------------------------------------------------------------

    def get(self, sku: str) -> Item:
        item = self.items.get(sku)
        if item is None:
            raise UnknownItem(f"no item with SKU {sku!r}")
        return item

    def snapshot(self) -> list[dict[str, object]]:
        return [item.as_dict() for item in self.items.values()]

    async def wait_for_change(self, seen: int) -> int:
        """Return the version once it is past ``seen`` (at once if it already is)."""
        while self.version <= seen:
            await self._changed.wait()
        return self.version

    # -- changing --------------------------------------------------------------------------

    def take(self, sku: str, quantity: int) -> Item:
        """Take ``quantity`` of an item out (an order); OutOfStock if there is not enough."""
        item = self.get(sku)
        _check_quantity(quantity)
        if quantity > item.quantity:
            raise OutOfStock(f"only {item.quantity} of {sku!r} left, {quantity} asked")
        item.quantity -= quantity
        self._changed_now()
        return item

    def put(self, sku: str, name: str, quantity: int) -> Item:
        """Create or replace an item (the admin's edit)."""
        if not sku or not name:
            raise InvalidInput("an item needs a non-empty SKU and name")
        _check_quantity(quantity, zero=True)
        item = self.items[sku] = Item(sku, name, quantity)
        self._changed_now()
        return item

    def order_delivery(self, sku: str, quantity: int) -> Delivery:
        """Record a restock on its way (the admin's background task receives it)."""
        self.get(sku)
        _check_quantity(quantity)
        delivery_id = next(self._ids)
        delivery = self.deliveries[delivery_id] = Delivery(delivery_id, sku, quantity)
        self._changed_now()
        return delivery

    def receive(self, delivery: Delivery) -> None:
        self.get(delivery.sku).quantity += delivery.quantity
        delivery.delivered = True
        self._changed_now()

    def _changed_now(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()


def _check_quantity(quantity: object, *, zero: bool = False) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < (0 if zero else 1):
        least = 0 if zero else 1
        raise InvalidInput(f"quantity must be a whole number of at least {least}, not {quantity!r}")
