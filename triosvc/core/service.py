"""Reading a service class: its name, entrypoints and dependency providers."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import attrs

from ..exceptions import ConfigurationError
from .extensions import DependencyProvider, Entrypoint, entrypoints_of

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ServiceDefinition", "inspect_service"]


@attrs.frozen
class ServiceDefinition:
    """What a service class declares, validated: the prototypes a container binds."""

    cls: type
    name: str
    dependencies: Mapping[str, DependencyProvider]
    entrypoints: tuple[tuple[str, Entrypoint], ...]


def inspect_service(cls: object) -> ServiceDefinition:
    """Validate ``cls`` as a service class and collect what it declares.

    Raises ConfigurationError, naming the class and attribute, for a missing or
    non-string ``name``, a class that cannot be instantiated without arguments, or an
    entrypoint that cannot call its method.
    """
    if not isinstance(cls, type):
        raise ConfigurationError(f"a service is a class with a `name` attribute, not {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"{cls.__qualname__}.name must be a non-empty string naming the service, got {name!r}"
        )
    try:
        inspect.signature(cls).bind()
    except TypeError as exc:
        raise ConfigurationError(
            f"{cls.__qualname__} must be instantiable without arguments "
            f"(triosvc creates one instance per call): {exc}"
        ) from None
    except ValueError:  # no signature to read (a C-level __init__): trust it
        pass

    dependencies: dict[str, DependencyProvider] = {}
    entrypoints: list[tuple[str, Entrypoint]] = []
    for attr_name, value in _class_attributes(cls):
        if isinstance(value, DependencyProvider):
            dependencies[attr_name] = value
            continue
        if isinstance(value, (staticmethod, classmethod)) and entrypoints_of(value.__func__):
            raise ConfigurationError(
                f"{cls.__qualname__}.{attr_name}: entrypoints decorate plain methods, "
                "not static or class methods"
            )
        for entrypoint in entrypoints_of(value):
            entrypoint.check(cls, attr_name)
            entrypoints.append((attr_name, entrypoint))
    return ServiceDefinition(
        cls=cls, name=name, dependencies=dependencies, entrypoints=tuple(entrypoints)
    )


def _class_attributes(cls: type) -> list[tuple[str, object]]:
    """The class's attributes, inherited ones included, in definition order."""
    seen: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for attr_name, value in vars(klass).items():
            seen[attr_name] = value  # a subclass's value replaces its base's, in place
    return list(seen.items())
