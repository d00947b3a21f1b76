"""A users API: create, list, read, update and delete users kept in memory.

Run it from this folder (``pip install`` triosvc first, see the top-level README)::

    triosvc run --config config.yaml users_service

It listens on http://127.0.0.1:8000 (``PORT=9000 triosvc run ...`` picks another port).
Then, from another terminal::

    curl -i -X POST http://127.0.0.1:8000/users \\
         -H 'Content-Type: application/json' -d '{"name": "Ada", "email": "ada@example.com"}'
    curl -i http://127.0.0.1:8000/users/1
    curl -i 'http://127.0.0.1:8000/users?limit=10'
    curl -i -X PATCH http://127.0.0.1:8000/users/1 \\
         -H 'Content-Type: application/json' -d '{"name": "Ada Lovelace"}'
    curl -i -X DELETE http://127.0.0.1:8000/users/1
    curl -i http://127.0.0.1:8000/users/1          # 404 {"error": "UserNotFound", ...}

Ctrl+C stops it gracefully. Its tests, in ``test_users_service.py``, show how to test
a service with triosvc's pytest fixtures: ``python -m pytest examples/users``.

What it shows:

- a dependency provider (:class:`UserStore`) that creates the store once, when the
  service starts, and injects it into every worker (one per request);
- ``@http`` endpoints with JSON bodies, path converters (``<int:user_id>``) and query
  arguments (``?limit=&offset=``);
- errors as answers: expected exceptions (``UserNotFound`` gives 404 through its
  ``status_code``, ``ValidationError`` 400) and triosvc's ``Conflict`` (409);
- CORS for a front end served from http://localhost:3000;
- a blocking ``def`` handler next to ``async def`` ones.
"""

import itertools
import threading

from werkzeug.wrappers import Request

from triosvc.exceptions import ConfigurationError, Conflict
from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.web.handlers import http

#: Lets a browser app on http://localhost:3000 call this API with cookies.
#: ``Location`` is exposed so that the app can read where a new user lives.
CORS = {
    "origins": ["http://localhost:3000"],
    "credentials": True,
    "expose_headers": ["Location"],
    "max_age": 600,
}

DEFAULT_PAGE_SIZE = 20


# --- errors --------------------------------------------------------------------------------------


class ValidationError(ValueError):
    """A request body or query argument that does not make sense: answered with 400."""


class UserNotFound(KeyError):
    """No user has this id: answered with 404, through ``status_code``."""

    status_code = 404

    def __init__(self, user_id: int) -> None:
        super().__init__(user_id)
        self.user_id = user_id

    def __str__(self) -> str:  # KeyError's own would quote the id
        return f"no user with id {self.user_id}"


# --- the store and its provider ------------------------------------------------------------------


class Store:
    """Users in a dict. Thread-safe, because blocking handlers run in worker threads."""

    def __init__(self, max_page_size: int) -> None:
        self.max_page_size = max_page_size
        self._users: dict[int, dict[str, object]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def create(self, name: str, email: str) -> dict[str, object]:
        with self._lock:
            self._check_email_free(email)
            user_id = next(self._ids)
            self._users[user_id] = {"id": user_id, "name": name, "email": email}
            return dict(self._users[user_id])

    def get(self, user_id: int) -> dict[str, object]:
        with self._lock:
            return dict(self._find(user_id))

    def page(self, limit: int, offset: int) -> tuple[list[dict[str, object]], int]:
        """Up to ``limit`` users from the ``offset``-th on, and how many there are."""
        with self._lock:
            users = list(self._users.values())
            return [dict(user) for user in users[offset : offset + limit]], len(users)

    def update(self, user_id: int, changes: dict[str, str]) -> dict[str, object]:
        with self._lock:
            user = self._find(user_id)
            if "email" in changes:
                self._check_email_free(changes["email"], but=user_id)
            user.update(changes)
            return dict(user)

    def delete(self, user_id: int) -> None:
        with self._lock:
            self._find(user_id)
            del self._users[user_id]

    def _find(self, user_id: int) -> dict[str, object]:
        try:
            return self._users[user_id]
        except KeyError:
            raise UserNotFound(user_id) from None

    def _check_email_free(self, email: str, but: int | None = None) -> None:
        for user in self._users.values():
            if user["email"] == email and user["id"] != but:
                raise Conflict(f"a user with email {email} already exists")


class UserStore(DependencyProvider):
    """Creates one :class:`Store` when the service starts and hands it to every worker.

    Reads ``USERS_MAX_PAGE_SIZE`` from the config: keys outside triosvc's own prefixes
    belong to the application and reach its providers this way.
    """

    async def setup(self) -> None:
        max_page_size = self.container.config.get("USERS_MAX_PAGE_SIZE", 100)
        if (
            isinstance(max_page_size, bool)
            or not isinstance(max_page_size, int)
            or max_page_size < 1
        ):
            raise ConfigurationError(
                f"USERS_MAX_PAGE_SIZE={max_page_size!r}: expected an integer >= 1"
            )
        self.store = Store(max_page_size)

    async def get_dependency(self, worker_ctx: WorkerContext) -> Store:
        return self.store


# --- the service ---------------------------------------------------------------------------------


class UsersService:
    name = "users"

    store = UserStore()

    @http("POST", "/users", expected_exceptions=ValidationError, cors=CORS)
    async def create_user(self, request: Request) -> tuple[dict[str, object], int, dict[str, str]]:
        fields = _user_fields(request, required=True)
        user = self.store.create(fields["name"], fields["email"])
        return user, 201, {"Location": f"/users/{user['id']}"}

    @http("GET", "/users", expected_exceptions=ValidationError, cors=CORS)
    async def list_users(self, request: Request) -> dict[str, object]:
        limit = _query_int(
            request, "limit", DEFAULT_PAGE_SIZE, low=1, high=self.store.max_page_size
        )
        offset = _query_int(request, "offset", 0, low=0)
        users, total = self.store.page(limit, offset)
        return {"users": users, "total": total, "limit": limit, "offset": offset}

    @http("GET", "/users/<int:user_id>", expected_exceptions=UserNotFound, cors=CORS)
    async def get_user(self, request: Request, user_id: int) -> dict[str, object]:
        return self.store.get(user_id)

    @http(
        "PATCH",
        "/users/<int:user_id>",
        expected_exceptions=(UserNotFound, ValidationError),
        cors=CORS,
    )
    async def update_user(self, request: Request, user_id: int) -> dict[str, object]:
        return self.store.update(user_id, _user_fields(request, required=False))

    # A plain ``def`` runs in a worker thread (through trio.to_thread), so it may block:
    # a real service would call a blocking database driver here.
    @http("DELETE", "/users/<int:user_id>", expected_exceptions=UserNotFound, cors=CORS)
    def delete_user(self, request: Request, user_id: int) -> None:
        self.store.delete(user_id)  # returning None answers 204 No Content


# --- request parsing -----------------------------------------------------------------------------

_FIELDS = ("name", "email")


def _user_fields(request: Request, *, required: bool) -> dict[str, str]:
    """The user fields of a JSON body; all of them when ``required``, else at least one."""
    body = request.get_json()  # invalid JSON is answered with 400 by triosvc
    if not isinstance(body, dict):
        raise ValidationError("expected a JSON object")
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}; expected {' and '.join(_FIELDS)}")
    missing = [field for field in _FIELDS if field not in body]
    if required and missing:
        raise ValidationError(f"missing field {missing[0]!r}")
    if not body:
        raise ValidationError(f"expected at least one of {' and '.join(_FIELDS)}")
    fields: dict[str, str] = {}
    for field, value in body.items():
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"{field!r} must be a non-empty string")
        fields[field] = value.strip()
    if "email" in fields:
        local, at, domain = fields["email"].partition("@")
        if not (local and at and "." in domain):
            raise ValidationError(f"{fields['email']!r} is not an email address")
        fields["email"] = fields["email"].lower()
    return fields


def _query_int(request: Request, name: str, default: int, *, low: int, high: int = 2**31) -> int:
    """An integer query argument such as ``?limit=10``, from ``low`` to ``high``."""
    text = request.args.get(name)
    if text is None:
        return min(default, high)
    try:
        value = int(text)
    except ValueError:
        raise ValidationError(f"{name} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be from {low} to {high}, got {value}")
    return value
