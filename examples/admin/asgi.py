"""The inventory as an ASGI app, for hypercorn's trio worker instead of ``triosvc run``::

    hypercorn -k trio --bind 127.0.0.1:8000 asgi:app

The app's lifespan starts the service (and the mounted admin) and stops it; hypercorn
speaks HTTP and WebSocket, with its own options (``--graceful-timeout``,
``--websocket-ping-interval``, TLS ...). ``WEB_SERVER_ADDRESS`` is not used.
"""

from pathlib import Path

from inventory_service import InventoryService

from triosvc.config import load_config_file
from triosvc.web import asgi_app

app = asgi_app(load_config_file(Path(__file__).with_name("config.yaml")), InventoryService)
