"""The web layer: the ``@http`` entrypoint, routing, request and response handling, the server.

Public paths: ``triosvc.web.handlers.http``; ``triosvc.web.server.WebServer`` is the
shared extension that serves every service's routes of one runner;
``triosvc.web.mount`` serves another ASGI app under a prefix beside them, and
``triosvc.web.asgi_app`` gives the services as an ASGI app for another server.
"""

from .mounting import MountStartupError as MountStartupError
from .mounting import mount as mount
from .standalone import ServicesASGIApp as ServicesASGIApp
from .standalone import asgi_app as asgi_app

__all__ = ["MountStartupError", "ServicesASGIApp", "asgi_app", "mount"]
