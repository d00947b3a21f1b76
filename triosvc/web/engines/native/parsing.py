"""Request parsing: httptools fed with what the socket gives, requests queued in order.

httptools (llhttp) parses everything it is fed and calls back as it goes, so one read
may complete several pipelined requests. They queue as :class:`Request` objects once
their headers are complete and are served in order; their body chunks land on them as
they are parsed. A parse error stops the parser and is kept as :attr:`Reader.error`:
the requests queued before it are answered first, then the refusal goes out.

Refused (llhttp in its strict default, checked by the tests): both Content-Length and
Transfer-Encoding, duplicate Content-Lengths, invalid header names, bare LF, obs-fold,
an unknown Transfer-Encoding: 400; chunked over another coding (``gzip, chunked``): 501.
Header bytes over ``max_header_size``: 431, counted exactly once the headers are complete
and approximately (at most one read's worth more) while they are still arriving, so that
a never-ending header cannot grow memory.
HTTP versions other than 1.0 and 1.1 (0.9): 505.

Methods: llhttp knows only registered methods, while HTTP allows any token (RFC 9110
§9.1) and the app answers one it does not route with 405 and ``Allow``, as on
hypercorn. A request whose method llhttp refuses is parsed with a stand-in method and
given to the app with its own. This works for a request at the start of a read (every
client that waits for its answers); an unknown method in a request pipelined behind
others in the same read is refused with 400.
"""

from __future__ import annotations

import re
from collections import deque

import httptools

__all__ = ["Reader", "Request"]

#: An RFC 9110 token, as a method must be.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Longest method we wait for when it arrives in pieces.
_MAX_METHOD = 32
#: What llhttp is told in place of a method it does not know: a method with no
#: semantics of its own in llhttp (a body only by Content-Length or chunked, no upgrade).
_STAND_IN = b"OPTIONS"


class Request:
    """One request's head, then its body as it arrives."""

    __slots__ = (
        "body",
        "complete",
        "expect_continue",
        "head_done",
        "header_bytes",
        "headers",
        "keep_alive",
        "method",
        "transfer_encoding",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = "GET"
        self.version = "1.1"
        self.keep_alive = True
        self.expect_continue = False
        #: The lowercased Upgrade header, if any.
        self.upgrade: bytes | None = None
        #: Every Transfer-Encoding header's value, joined with commas.
        self.transfer_encoding: bytes | None = None
        self.header_bytes = 0
        self.head_done = False
        #: Parsed body chunks the app has not taken yet.
        self.body: deque[bytes] = deque()
        #: The whole body has been parsed.
        self.complete = False


def _unsupported_coding(transfer_encoding: bytes) -> bool:
    """Whether the body is chunked on top of a coding we cannot undo (gzip, chunked).

    llhttp frames such a body by its final chunked coding and would hand the app the
    still-encoded bytes as the body. RFC 9112 §6.1: 501. When chunked is not the final
    coding llhttp refuses the request itself (400, RFC 9112 §6.3).
    """
    codings = [c.strip().lower() for c in transfer_encoding.split(b",") if c.strip()]
    return bool(codings) and codings[-1] == b"chunked" and codings != [b"chunked"]


class _Refused(Exception):
    """Raised in a parser callback to stop parsing with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Reader:
    """The parser of one connection and what it found so far."""

    def __init__(self, max_header_size: int) -> None:
        self.max_header_size = max_header_size
        self._parser = httptools.HttpRequestParser(self)
        #: Requests whose headers are complete, oldest first.
        self.ready: deque[Request] = deque()
        #: The request being parsed (head or body), if any.
        self.current: Request | None = None
        #: (status, message) once parsing failed; nothing more is parsed then.
        self.error: tuple[int, str] | None = None
        #: The bytes after a WebSocket upgrade request; nothing more is parsed then.
        self.upgrade_data: bytes | None = None
        self.eof = False
        self._refusal: _Refused | None = None
        self._begun_now = False
        #: Messages completed so far (tells whether a parse error hit a read's first).
        self._completed = 0
        #: The start of a request whose unknown method has not fully arrived yet.
        self._held = b""
        #: The real method of the request being parsed with :data:`_STAND_IN`.
        self._unknown_method: str | None = None

    @property
    def stopped(self) -> bool:
        """Whether feeding more bytes is pointless (end, error or upgrade)."""
        return self.eof or self.error is not None or self.upgrade_data is not None

    @property
    def in_head(self) -> bool:
        """Whether a request has begun and its headers are not complete yet."""
        current = self.current
        return current is not None and not current.head_done

    def feed(self, data: bytes) -> None:
        """Parse ``data``; ``b""`` is the end of the stream."""
        if self.stopped:
            return
        if not data:
            self.eof = True
            return
        if self._held:
            data, self._held = self._held + data, b""
        began_before = self.in_head
        completed_before = self._completed
        self._begun_now = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0] :])
            return
        except httptools.HttpParserInvalidMethodError:
            if not began_before and self._completed == completed_before:
                self._unknown_method_at_start(data)
                return
            self.error = (400, "malformed request: a method not known to this server")
            return
        except httptools.HttpParserError as exc:
            refusal = self._refusal
            if refusal is not None:
                self.error = (refusal.status, str(refusal))
            else:
                self.error = (400, f"malformed request: {exc}")
            current = self.current
            if current is not None and self.ready and self.ready[-1] is current:
                self.ready.pop()  # its body cannot be read: the refusal answers it
            return
        current = self.current
        if current is not None and self.in_head:
            if began_before and not self._begun_now:
                current.header_bytes += len(data)
            if current.header_bytes > self.max_header_size:
                self.error = (431, "the request's headers are too large")

    def _unknown_method_at_start(self, data: bytes) -> None:
        """Parse ``data``, a request whose method llhttp refused, with a stand-in."""
        self._parser = httptools.HttpRequestParser(self)  # the refusing one is spent
        self.current = None
        line = data.lstrip(b"\r\n")
        method, space, rest = line.partition(b" ")
        if not space and len(line) <= _MAX_METHOD and _TOKEN.fullmatch(line):
            self._held = data  # the method arrives in pieces: wait for the rest
        elif space and len(method) <= _MAX_METHOD and _TOKEN.fullmatch(method):
            self._unknown_method = method.decode("ascii")
            self.feed(_STAND_IN + b" " + rest)
        else:
            self.error = (400, "malformed request: the request line is not HTTP")

    def _upgraded(self, rest: bytes) -> None:
        request = self.ready[-1] if self.ready else None
        if request is not None and request.upgrade == b"websocket" and request.method == "GET":
            self.upgrade_data = rest
        elif rest:  # not a WebSocket (h2c, say): an ordinary request; parse on
            self.feed(rest)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.current = Request()
        self._begun_now = True

    def on_url(self, url: bytes) -> None:
        current = self.current
        assert current is not None
        current.url += url
        current.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        current = self.current
        assert current is not None
        name = name.lower()
        current.headers.append((name, value))
        current.header_bytes += len(name) + len(value) + 4
        if name == b"expect":
            current.expect_continue = value.lower() == b"100-continue"
        elif name == b"upgrade":
            current.upgrade = value.lower()
        elif name == b"transfer-encoding":
            previous = current.transfer_encoding
            current.transfer_encoding = value if previous is None else previous + b"," + value

    def on_headers_complete(self) -> None:
        current = self.current
        assert current is not None
        parser = self._parser
        current.version = parser.get_http_version()
        if current.version not in ("1.1", "1.0"):
            self._refusal = _Refused(505, f"HTTP/{current.version} is not supported")
            raise self._refusal
        if current.header_bytes > self.max_header_size:
            self._refusal = _Refused(431, "the request's headers are too large")
            raise self._refusal
        coding = current.transfer_encoding
        if coding is not None and _unsupported_coding(coding):
            self._refusal = _Refused(501, "transfer codings other than chunked are not supported")
            raise self._refusal
        if self._unknown_method is not None:
            current.method, self._unknown_method = self._unknown_method, None
        else:
            current.method = parser.get_method().decode("ascii")
        current.keep_alive = parser.should_keep_alive()
        current.head_done = True
        self.ready.append(current)

    def on_body(self, body: bytes) -> None:
        current = self.current
        assert current is not None
        current.body.append(body)

    def on_message_complete(self) -> None:
        current = self.current
        assert current is not None
        current.complete = True
        self.current = None
        self._completed += 1
