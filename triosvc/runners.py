"""Running services: in a nursery of yours, as a context manager, or through the CLI."""

from __future__ import annotations

from .core.runner import ServiceRunner as ServiceRunner
from .core.runner import open_services as open_services
from .core.runner import run_services as run_services

__all__ = ["ServiceRunner", "open_services", "run_services"]
