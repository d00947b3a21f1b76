"""triosvc: microservices on Trio's structured concurrency.

The public API lives in its modules, at the paths nameko users know:
``triosvc.web.handlers`` (``http``), ``triosvc.extensions`` (``DependencyProvider``),
``triosvc.exceptions`` and ``triosvc.runners`` (``ServiceRunner``, ``run_services``).
"""

from __future__ import annotations

__version__ = "0.1.0"
