"""A module without service classes."""

from __future__ import annotations


class Settings:
    name = "settings"  # a name, but no entrypoint


def helper() -> int:
    return 1
