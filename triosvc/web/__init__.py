"""The web layer: the ``@http`` entrypoint, routing, request and response handling, the server.

Public paths: ``triosvc.web.handlers.http``; ``triosvc.web.server.WebServer`` is the
shared extension that serves every service's routes of one runner.
"""
