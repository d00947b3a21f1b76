"""Helpers for testing services: the pytest plugin (``triosvc.testing.pytest_plugin``)."""
