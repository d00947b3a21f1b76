"""Sphinx configuration: the Markdown pages of docs/ (MyST) and the API reference (autodoc).

Build: ``nox -s docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``).
"""

from __future__ import annotations

import builtins

import triosvc

project = "triosvc"
author = "the triosvc authors"
copyright = "the triosvc authors"
version = release = triosvc.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "furo"
html_title = f"triosvc {release}"

# Every cross-reference to triosvc's own API must resolve; others (trio, werkzeug, the
# standard library) are left as plain text, since the build has no network for intersphinx.
nitpicky = True
nitpick_ignore_regex = [
    # Other packages' names (trio.Nursery, werkzeug.wrappers.Request, collections.abc...).
    (r"py:.*", r"(?!triosvc\.)[A-Za-z_]\w*(\.\w+)+"),
    # Builtins (str, int, None...).
    (r"py:.*", "|".join(name for name in dir(builtins) if not name.startswith("_"))),
    # Type variables in signatures (F, S, E...).
    (r"py:class", r"triosvc(\.\w+)*\.[A-Z]"),
]
# Types that public signatures mention and the reference leaves out on purpose (internal
# ones, and names that annotations import under TYPE_CHECKING, which autodoc sees bare).
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "triosvc.core.container.ServiceContainer",
        "triosvc.ws.hub.SocketState",
        "triosvc.ws.protocol.Failure",
        "ServiceContainer",
        "Caller",
        "Transport",
        "CorsPolicy",
        "Middleware",
        "Headers",
        "Request",
        "Response",
        "ASGIApp",
        "Mount",
        "ClusterLink",
        "ClusterStatistics",
        "WebSocketTransport",
        "triosvc.ws.client.WebSocketTransport",
        "Scope",
    )
]


def _attribute_docstrings_have_no_inline_type(app: object) -> None:
    """Read an attribute's or property's docstring as description only.

    napoleon reads a first line ``words: more words`` as ``type: description``; triosvc's
    attribute docstrings never give a type that way (annotations do), and often start with
    a colon in a sentence ("None: nowhere").
    """
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    def description_only(self: GoogleDocstring) -> tuple[str, list[str]]:
        lines = self._dedent(self._consume_to_end())
        return "", self.__class__(lines, self._config).lines()

    GoogleDocstring._consume_inline_attribute = description_only  # type: ignore[method-assign]


def setup(app: object) -> None:
    _attribute_docstrings_have_no_inline_type(app)
