"""Finding the value JSON cannot carry in a structure, to say where it is and what it is.

Used when an encoder failed (the WebSocket protocol, RPC payloads): the walk goes in the
order json writes, so it finds what json failed on, and without recursion, so a value
nested beyond the recursion limit is walked too.
"""

from __future__ import annotations

import json
import math
from typing import TypeAlias

__all__ = ["Path", "find_unencodable", "or_repr", "render_path", "safe_repr", "safe_str"]

#: A path inside a value: a linked list (parent, key), so that each step deeper is O(1).
Path: TypeAlias = "tuple[Path, object] | None"


def find_unencodable(root: object) -> tuple[Path, str] | None:
    """Where in ``root`` the first value JSON cannot write is, and why; None if none is.

    Never raises (a container subclass that breaks when iterated gives None).
    """
    try:
        return _walk(root)
    except Exception:
        return None


def render_path(path: Path) -> str:
    """``[1]['a']`` for the path to ``root[1]['a']`` (empty for the root itself)."""
    keys: list[object] = []
    while path is not None:
        path, key = path
        keys.append(key)
    text = "".join(f"[{key!r}]" for key in reversed(keys))
    return text if len(text) <= 120 else f"{text[:50]}...{text[-60:]}"


def _walk(root: object) -> tuple[Path, str] | None:
    # An int on the stack marks the end of the container with that id.
    stack: list[tuple[object, Path] | int] = [(root, None)]
    open_containers: set[int] = set()  # being walked: meeting one again is a cycle
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            open_containers.discard(item)
            continue
        value, path = item
        if value is None or isinstance(value, str | bool):
            continue
        problem: str | None
        if isinstance(value, int):
            problem = _int_problem(value)
        elif isinstance(value, float):
            problem = _float_problem(value)
        elif isinstance(value, list | tuple | dict):
            if id(value) in open_containers:
                return path, "is a circular reference to a container it is in"
            problem = _keys_problem(value) if isinstance(value, dict) else None
            if problem is None:
                children = value.items() if isinstance(value, dict) else enumerate(value)
                open_containers.add(id(value))
                stack.append(id(value))
                stack.extend((child, (path, key)) for key, child in reversed(list(children)))
                continue
        else:
            problem = f"has type {_type_name(value)}"
        if problem is not None:
            return path, problem
    return None


def _int_problem(value: int) -> str | None:
    try:
        int.__repr__(value)
    except ValueError:
        return "is an int with more digits than Python writes (sys.get_int_max_str_digits())"
    return None


def _float_problem(value: float) -> str | None:
    return None if math.isfinite(value) else f"is {value!r}, and JSON has no NaN or Infinity"


def _keys_problem(mapping: dict[object, object]) -> str | None:
    for key in mapping:
        if key is None or isinstance(key, str | bool):
            continue
        if isinstance(key, int):
            problem = _int_problem(key)
        elif isinstance(key, float):
            problem = _float_problem(key)
        else:
            return f"has a key of type {_type_name(key)}; JSON object keys are strings"
        if problem is not None:
            return f"has a key that {problem}"
    return None


def _type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


# Error-path helpers: what describes a failure must not fail itself.


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when its ``__str__`` is broken."""
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not turn one error into another
        return f"<{type(exc).__name__}: str() failed>"


def safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder when that fails."""
    try:
        return repr(value)
    except Exception:  # a broken __repr__, or a structure too deep to repr
        return f"<{type(value).__name__}: repr() failed>"


_STRICT = json.JSONEncoder(allow_nan=False).encode


def or_repr(value: object) -> object:
    """``value`` when it can be written as strict JSON, else its repr()."""
    try:
        _STRICT(value)
    except Exception:
        return safe_repr(value)
    return value
