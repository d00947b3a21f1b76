"""The service core: services, entrypoints, dependency providers, containers, the runner.

Nothing here imports the web layer; entrypoints reach their servers through
:class:`SharedExtension`, which the runner starts without knowing what it serves.
"""

from __future__ import annotations

from .container import ServiceContainer as ServiceContainer
from .container import WorkerSlot as WorkerSlot
from .context import WorkerContext as WorkerContext
from .extensions import DependencyProvider as DependencyProvider
from .extensions import Entrypoint as Entrypoint
from .extensions import SharedExtension as SharedExtension
from .runner import ServiceRunner as ServiceRunner
from .runner import open_services as open_services
from .runner import run_services as run_services
from .service import ServiceDefinition as ServiceDefinition
from .service import inspect_service as inspect_service

__all__ = [
    "DependencyProvider",
    "Entrypoint",
    "ServiceContainer",
    "ServiceDefinition",
    "ServiceRunner",
    "SharedExtension",
    "WorkerContext",
    "WorkerSlot",
    "inspect_service",
    "open_services",
    "run_services",
]
