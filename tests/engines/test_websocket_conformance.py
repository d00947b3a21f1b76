"""RFC 6455 conformance on both engines, after the Autobahn fuzzing client's cases.

The real suite (``wstest -m fuzzingclient``, Python 2 only) runs outside pytest against
the echo app this module serves (see docs/conformance.md, and ``serve`` at the bottom;
the app is ``conftest.echo``, which the other WebSocket tests use too); these
tests play a reduced set of its cases, numbered as in Autobahn, on every run.

Each case is a script: writes (wsproto's well-formed frames, or hand-built ones from
:mod:`.wsframes`), then what the server must answer, in order: echoed messages, pongs,
and, when it must fail the connection, a close frame with the given code followed by
the end of the TCP connection. A script with no close of its own ends with a normal
closing handshake started by the client, which also checks that nothing else came.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
from wsproto.events import BytesMessage, Event, Ping, Pong, TextMessage

from .conftest import echo
from .wsframes import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Client,
    close_payload,
    connect,
    frame,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Seconds any one case may take.
TIMEOUT = 10

#: Bytes of one message the echo app is served with (section 9 sends 1 MiB).
MAX_MESSAGE = 4 * 1024 * 1024

MiB = 1024 * 1024


# The script language.


@attrs.frozen
class Send:
    """Frames to write: in one write, one write per frame, or in ``chop``-byte writes."""

    frames: Sequence[Event | bytes]
    per_frame: bool = False
    chop: int | None = None


def send(*frames: Event | bytes, per_frame: bool = False, chop: int | None = None) -> Send:
    return Send(frames, per_frame, chop)


@attrs.frozen
class Echo:
    data: str | bytes


@attrs.frozen
class Pongs:
    payloads: Sequence[bytes]


def pong(*payloads: bytes) -> Pongs:
    return Pongs(payloads)


@attrs.frozen
class Fails:
    """The server fails the connection: a close frame with one of ``codes``, then EOF."""

    codes: tuple[int | None, ...]


def fails(*codes: int | None) -> Fails:
    return Fails(codes)


@attrs.frozen
class ClosesBack:
    """The client closed: the server answers with a close frame (one of ``codes``), then EOF."""

    codes: tuple[int | None, ...]


Step = Send | Echo | Pongs | Fails | ClosesBack


async def play(client: Client, script: Sequence[Step]) -> None:
    for step in script:
        if isinstance(step, Send):
            await _write(client, step)
        elif isinstance(step, Echo):
            assert await client.message() == step.data
        elif isinstance(step, Pongs):
            for payload in step.payloads:
                assert await client.pong() == payload
        elif isinstance(step, Fails):
            await client.expect_close(*step.codes)
            return
        else:
            received = await client.next_frame("a close frame")
            assert received.opcode == CLOSE, received
            assert received.close_code in step.codes, received
            await client.expect_eof()
            return
    await client.close_normally()


async def _write(client: Client, step: Send) -> None:
    chunks = [client.ws.send(f) if isinstance(f, Event) else f for f in step.frames]
    if not step.per_frame:
        data = b"".join(chunks)
        size = step.chop or len(data) or 1
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
    try:
        for chunk in chunks:
            await client.send_raw(chunk)
    except trio.BrokenResourceError:
        pass  # the server failed the connection already: what it sent tells


# The cases, numbered after Autobahn's (a trailing "r": reduced in size).

#: Why hypercorn fails the cases where the server must fail the connection: wsproto
#: reports the protocol error as a CloseConnection while the connection is still OPEN,
#: and hypercorn answers only a close in REMOTE_CLOSING, so it just ends the stream.
HYPERCORN_DROPS = (
    "hypercorn 0.18 fails the connection by closing TCP without any close frame "
    "(RFC 6455 §7.1.7: it SHOULD send one, with {code})"
)
#: ... and where a valid message came just before the bad frame.
HYPERCORN_DROPS_ECHO = (
    "hypercorn 0.18 closes TCP without the {code} close frame (RFC 6455 §7.1.7) and, "
    "depending on timing, without echoing the valid message that came before the bad frame"
)


@attrs.frozen
class Case:
    number: str
    script: Sequence[Step]
    #: Why hypercorn fails it (a strict xfail), if it does.
    hypercorn: str | None
    #: Connections that play it: a race the server may lose only some of the time.
    repeat: int


CASES: list[Case] = []


def case(number: str, *script: Step, hypercorn: str | None = None, repeat: int = 1) -> None:
    CASES.append(Case(number, script, hypercorn, repeat))


# 1. Framing: payload lengths around the 7-bit, 16-bit and 64-bit length encodings.
for _n, _size in [(1, 0), (2, 125), (3, 126), (4, 127), (6, 65535), (7, 65536)]:
    case(f"1.1.{_n}-text-{_size}", send(TextMessage("*" * _size)), Echo("*" * _size))
    _data = bytes([0xFE]) * _size
    case(f"1.2.{_n}-binary-{_size}", send(BytesMessage(_data)), Echo(_data))
case("1.1.8-text-65536-in-997B-writes", send(TextMessage("*" * 65536), chop=997), Echo("*" * 65536))

# 2. Pings and pongs.
_DROPS = HYPERCORN_DROPS.format(code=1002)
_DROPS_ECHO = HYPERCORN_DROPS_ECHO.format(code=1002)
case("2.1-ping-empty", send(Ping()), pong(b""))
case("2.2-ping-text", send(Ping(b"Hello, world!")), pong(b"Hello, world!"))
case(
    "2.3-ping-binary",
    send(Ping(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")),
    pong(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"),
)
case("2.4-ping-125", send(Ping(b"\xfe" * 125)), pong(b"\xfe" * 125))
case("2.5-ping-126", send(frame(PING, b"\xfe" * 126)), fails(1002), hypercorn=_DROPS)
case("2.6-ping-125-octetwise", send(Ping(b"\xfe" * 125), chop=1), pong(b"\xfe" * 125))
case("2.7-unsolicited-pong-empty", send(Pong()))
case("2.8-unsolicited-pong", send(Pong(b"unsolicited pong payload")))
case(
    "2.9-unsolicited-pong-then-ping",
    send(Pong(b"unsolicited pong payload"), Ping(b"ping payload")),
    pong(b"ping payload"),
)
_TEN = [b"payload-%d" % i for i in range(10)]
case("2.10-ten-pings", send(*[Ping(p) for p in _TEN]), pong(*_TEN))
case("2.11-ten-pings-octetwise", send(*[Ping(p) for p in _TEN], chop=1), pong(*_TEN))

# 3. Reserved bits, with no extension negotiated: the connection fails.
_HELLO = b"Hello, world!"
case("3.1-rsv1-text", send(frame(TEXT, _HELLO, rsv=1)), fails(1002), hypercorn=_DROPS)


def _rsv_between_text_and_ping(
    rsv: int, *, per_frame: bool = False, chop: int | None = None
) -> None:
    case(
        f"3.{rsv}-rsv{rsv}-text-between-text-and-ping",
        send(
            TextMessage(_HELLO.decode()),
            frame(TEXT, _HELLO, rsv=rsv),
            Ping(),
            per_frame=per_frame,
            chop=chop,
        ),
        Echo(_HELLO.decode()),
        fails(1002),
        hypercorn=_DROPS_ECHO,
    )


_rsv_between_text_and_ping(2, per_frame=True)
_rsv_between_text_and_ping(3)
_rsv_between_text_and_ping(4, chop=1)
case("3.5-rsv5-binary", send(frame(BINARY, b"\x00\xff\xfe", rsv=5)), fails(1002), hypercorn=_DROPS)
case("3.6-rsv6-ping", send(frame(PING, _HELLO, rsv=6)), fails(1002), hypercorn=_DROPS)
case(
    "3.7-rsv7-close", send(frame(CLOSE, close_payload(1000), rsv=7)), fails(1002), hypercorn=_DROPS
)

# 4. Reserved opcodes: 3-7 (non-control), 11-15 (control).
for _group, _opcodes in [(1, [3, 4, 5, 6, 7]), (2, [11, 12, 13, 14, 15])]:
    for _n, _opcode in enumerate(_opcodes, 1):
        if _n <= 2:
            case(
                f"4.{_group}.{_n}-opcode-{_opcode}",
                send(frame(_opcode, b"reserved opcode payload"[: 11 * (_n - 1)])),
                fails(1002),
                hypercorn=_DROPS,
            )
        else:
            case(
                f"4.{_group}.{_n}-opcode-{_opcode}-between-text-and-ping",
                send(TextMessage(_HELLO.decode()), frame(_opcode, _HELLO), Ping()),
                Echo(_HELLO.decode()),
                fails(1002),
                hypercorn=_DROPS_ECHO,
            )

# 5. Fragmentation.
_F1, _F2 = TextMessage("fragment1", message_finished=False), TextMessage("fragment2")
case(
    "5.1-fragmented-ping",
    send(frame(PING, b"fragment1", fin=False), frame(CONTINUATION, b"fragment2")),
    fails(1002),
    hypercorn=_DROPS,
)
case(
    "5.2-fragmented-pong",
    send(frame(PONG, b"fragment1", fin=False), frame(CONTINUATION, b"fragment2")),
    fails(1002),
    hypercorn=_DROPS,
)
case("5.3-two-fragments", send(_F1, _F2), Echo("fragment1fragment2"))
case("5.4-two-fragments-framewise", send(_F1, _F2, per_frame=True), Echo("fragment1fragment2"))
case("5.5-two-fragments-octetwise", send(_F1, _F2, chop=1), Echo("fragment1fragment2"))
_PING = Ping(b"ping payload")
case(
    "5.6-ping-between-fragments",
    send(_F1, _PING, _F2),
    pong(b"ping payload"),
    Echo("fragment1fragment2"),
)
case(
    "5.7-ping-between-fragments-framewise",
    send(_F1, _PING, _F2, per_frame=True),
    pong(b"ping payload"),
    Echo("fragment1fragment2"),
)
case(
    "5.8-ping-between-fragments-octetwise",
    send(_F1, _PING, _F2, chop=1),
    pong(b"ping payload"),
    Echo("fragment1fragment2"),
)
_ORPHAN = b"non-continuation payload"
case(
    "5.9-continuation-fin-with-nothing-to-continue",
    send(frame(CONTINUATION, _ORPHAN), TextMessage("Hello, world!")),
    fails(1002),
    hypercorn=_DROPS,
)
case(
    "5.12-continuation-nofin-with-nothing-to-continue",
    send(frame(CONTINUATION, _ORPHAN, fin=False), TextMessage("Hello, world!")),
    fails(1002),
    hypercorn=_DROPS,
)
case(
    "5.15-continuation-after-a-finished-message",
    send(_F1, _F2, frame(CONTINUATION, b"fragment3", fin=False), frame(TEXT, b"fragment4")),
    Echo("fragment1fragment2"),
    fails(1002),
    hypercorn=_DROPS_ECHO,
)
case(
    "5.18-text-frame-inside-a-fragmented-message",
    send(frame(TEXT, b"fragment1", fin=False), frame(TEXT, b"fragment2")),
    fails(1002),
    hypercorn=_DROPS,
)
# 5.19 waits a second between fragments; here the client waits for the first pong.
case(
    "5.19-pings-interleaved-in-five-fragments",
    send(
        frame(TEXT, b"fragment1", fin=False),
        frame(CONTINUATION, b"fragment2", fin=False),
        Ping(b"pongme 1!"),
    ),
    pong(b"pongme 1!"),
    send(
        frame(CONTINUATION, b"fragment3", fin=False),
        frame(CONTINUATION, b"fragment4", fin=False),
        Ping(b"pongme 2!"),
        frame(CONTINUATION, b"fragment5"),
    ),
    pong(b"pongme 2!"),
    Echo("fragment1fragment2fragment3fragment4fragment5"),
)

# 6. UTF-8 in text messages: invalid is failed with 1007, in one frame or in pieces.
_VALID = "Hello-µ@ßöäüàá-UTF-8!!"
_KOSME = "κόσμε"


def _octetwise(data: bytes) -> list[bytes]:
    """A text message in frames of one byte each (cutting through code points)."""
    last = len(data) - 1
    return [
        frame(TEXT if i == 0 else CONTINUATION, data[i : i + 1], fin=i == last)
        for i in range(len(data))
    ]


_EMPTY_FRAGMENT = TextMessage("", message_finished=False)
case("6.1.1-empty", send(TextMessage("")), Echo(""))
case(
    "6.1.2-three-empty-fragments", send(_EMPTY_FRAGMENT, _EMPTY_FRAGMENT, TextMessage("")), Echo("")
)
case(
    "6.1.3-empty-middle-empty",
    send(
        _EMPTY_FRAGMENT,
        TextMessage("middle frame payload", message_finished=False),
        TextMessage(""),
    ),
    Echo("middle frame payload"),
)
case("6.2.1-valid-multibyte", send(TextMessage(_VALID)), Echo(_VALID))
case(
    "6.2.2-valid-split-on-a-code-point",
    send(TextMessage(_VALID[:11], message_finished=False), TextMessage(_VALID[11:])),
    Echo(_VALID),
)
case("6.2.3-valid-octetwise-fragments", send(*_octetwise(_VALID.encode())), Echo(_VALID))
case("6.2.4-valid-kosme-octetwise-fragments", send(*_octetwise(_KOSME.encode())), Echo(_KOSME))
_EXTREMES = "\x00\x7f\u0080\u07ff\u0800\ud7ff\ue000\ufffd\uffff\U00010000\U00024b62\U0010ffff"
case("6.x-valid-boundary-code-points", send(TextMessage(_EXTREMES)), Echo(_EXTREMES))
case(
    "6.x-valid-boundary-code-points-octetwise",
    send(*_octetwise(_EXTREMES.encode())),
    Echo(_EXTREMES),
)
_INVALID = _KOSME.encode() + b"\xed\xa0\x80" + b"edited"  # a UTF-16 surrogate
_BAD_UTF8 = HYPERCORN_DROPS.format(code=1007)
case("6.3.1-invalid", send(frame(TEXT, _INVALID)), fails(1007), hypercorn=_BAD_UTF8)
case(
    "6.3.2-invalid-octetwise-fragments",
    send(*_octetwise(_INVALID)),
    fails(1007),
    hypercorn=_BAD_UTF8,
)
# 6.4.1: the message never ends; the second fragment alone must fail it (fail fast).
case(
    "6.4.1-fail-fast-in-an-unfinished-message",
    send(
        frame(TEXT, _KOSME.encode(), fin=False), frame(CONTINUATION, b"\xf4\x90\x80\x80", fin=False)
    ),
    fails(1007),
    hypercorn=_BAD_UTF8,
)
for _name, _bad in [
    ("overlong-slash", b"\xc0\xaf"),
    ("overlong-nul", b"\xe0\x80\x80"),
    ("above-U+10FFFF", b"\xf4\x90\x80\x80"),
    ("lone-continuation-byte", b"\x80"),
    ("five-byte-sequence", b"\xf8\x88\x80\x80\x80"),
    ("byte-fe", b"\xfe"),
    ("surrogate-pair", b"\xed\xa0\x80\xed\xb0\x80"),
    ("truncated-at-the-end", "κόσμ".encode() + b"\xce"),
]:
    case(
        f"6.x-invalid-{_name}", send(frame(TEXT, b"hello" + _bad)), fails(1007), hypercorn=_BAD_UTF8
    )
case(
    "6.x-invalid-truncated-at-the-end-of-a-fragmented-message",
    send(frame(TEXT, b"hello\xce", fin=False), frame(CONTINUATION, b"")),
    fails(1007),
    hypercorn=_BAD_UTF8,
)

# 7. The closing handshake.
_CLOSE = frame(CLOSE, close_payload(1000))
# The message and the close in one write: the server must echo before it answers the close.
case(
    "7.1.1-message-then-close",
    send(TextMessage("Hello World!"), _CLOSE),
    Echo("Hello World!"),
    ClosesBack((1000,)),
    hypercorn=(
        "hypercorn 0.18 answers the close in its reading task while the app's echo of the "
        "message read with it is on its way: about half the time (the case plays 40 "
        "connections) the close goes first and the echo is dropped"
    ),
    repeat=40,
)
case("7.1.2-two-closes", send(_CLOSE, _CLOSE), ClosesBack((1000,)))
case("7.1.3-ping-after-close", send(_CLOSE, Ping(b"Hello World!")), ClosesBack((1000,)))
case("7.1.4-text-after-close", send(_CLOSE, TextMessage("Hello World!")), ClosesBack((1000,)))
case(
    "7.1.5-close-between-fragments",
    send(
        TextMessage("fragment1", message_finished=False), _CLOSE, frame(CONTINUATION, b"fragment2")
    ),
    ClosesBack((1000,)),
)
case("7.3.1-close-empty", send(frame(CLOSE)), ClosesBack((None, 1000)))
case("7.3.2-close-1-byte", send(frame(CLOSE, b"\x03")), fails(1002), hypercorn=_DROPS)
case("7.3.3-close-code", send(_CLOSE), ClosesBack((1000,)))
case(
    "7.3.4-close-code-and-reason",
    send(frame(CLOSE, close_payload(1000, b"Hello World!"))),
    ClosesBack((1000,)),
)
case(
    "7.3.5-close-reason-123",
    send(frame(CLOSE, close_payload(1000, b"*" * 123))),
    ClosesBack((1000,)),
)
case(
    "7.3.6-close-reason-124",
    send(frame(CLOSE, close_payload(1000, b"*" * 124))),
    fails(1002),
    hypercorn=_DROPS,
)
case(
    "7.5.1-close-reason-invalid-utf8",
    send(frame(CLOSE, close_payload(1000, _INVALID))),
    fails(1007),
    hypercorn=_BAD_UTF8,
)
for _n, _code in enumerate(
    [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999], 1
):
    case(
        f"7.7.{_n}-close-{_code}-echoed",
        send(frame(CLOSE, close_payload(_code))),
        ClosesBack((_code,)),
    )
for _n, _code in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999], 1):
    case(
        f"7.9.{_n}-close-{_code}-invalid",
        send(frame(CLOSE, close_payload(_code))),
        fails(1002),
        hypercorn=_DROPS,
    )
for _n, _code in enumerate([5000, 65535], 1):
    case(
        f"7.13.{_n}-close-{_code}-invalid",
        send(frame(CLOSE, close_payload(_code))),
        fails(1002),
        hypercorn=_DROPS,
    )

# 9. Limits, reduced: 1 MiB messages (Autobahn goes to 16 MiB), whole or in 64 KiB frames.
_TEXT_MIB, _BINARY_MIB = "*" * MiB, b"\xfe" * MiB


def _fragments(message: str | bytes, size: int) -> list[Event]:
    events: list[Event] = []
    for start in range(0, len(message), size):
        piece, finished = message[start : start + size], start + size >= len(message)
        if isinstance(piece, str):
            events.append(TextMessage(piece, message_finished=finished))
        else:
            events.append(BytesMessage(piece, message_finished=finished))
    return events


case("9.1.3r-text-1MiB", send(TextMessage(_TEXT_MIB)), Echo(_TEXT_MIB))
case("9.2.3r-binary-1MiB", send(BytesMessage(_BINARY_MIB)), Echo(_BINARY_MIB))
case(
    "9.3.6r-text-1MiB-in-64KiB-fragments", send(*_fragments(_TEXT_MIB, 64 * 1024)), Echo(_TEXT_MIB)
)
case(
    "9.4.6r-binary-1MiB-in-64KiB-fragments",
    send(*_fragments(_BINARY_MIB, 64 * 1024)),
    Echo(_BINARY_MIB),
)

# Not an Autobahn case (its client cannot send one): RFC 6455 §5.1, unmasked client frames.
case("rfc5.1-unmasked-text", send(frame(TEXT, _HELLO, masked=False)), fails(1002), hypercorn=_DROPS)
case(
    "rfc5.1-unmasked-after-a-message",
    send(TextMessage("first")),
    Echo("first"),
    send(frame(TEXT, _HELLO, masked=False)),
    fails(1002),
    hypercorn=_DROPS,
)


def _params() -> list[Any]:
    params = []
    for autobahn_case in CASES:
        for engine_name in ("triosvc", "hypercorn"):
            marks = []
            if engine_name == "hypercorn" and autobahn_case.hypercorn is not None:
                reason = f"BUG: {autobahn_case.hypercorn}"
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            name = f"{autobahn_case.number}-{engine_name}"
            params.append(pytest.param(engine_name, autobahn_case, marks=marks, id=name))
    return params


@pytest.mark.parametrize(("engine_name", "autobahn_case"), _params())
async def test_autobahn_case(engine_named: Any, engine_name: str, autobahn_case: Case) -> None:
    running = await engine_named(engine_name, echo, websocket_max_message_size=MAX_MESSAGE)
    with trio.fail_after(TIMEOUT):
        for _ in range(autobahn_case.repeat):
            client = await connect(running)
            async with client.stream:
                await play(client, autobahn_case.script)


# Serving the echo app for the real suite: python -m tests.engines.test_websocket_conformance


async def serve(engine_name: str, address: str) -> None:
    from triosvc.config import parse_address
    from triosvc.web.engines import EngineOptions, get_engine
    from triosvc.web.server import bind_socket

    from .conftest import _with_lifespan

    sock = bind_socket(parse_address(address))
    options = EngineOptions(
        graceful_timeout=5.0,
        read_timeout=60.0,
        max_header_size=16 * 1024,
        websocket_max_message_size=64 * MiB,  # Autobahn's largest message is 16 MiB
    )
    app: Any = _with_lifespan(echo) if engine_name == "hypercorn" else echo
    print(f"{engine_name} echoing WebSocket messages on ws://{address}/", flush=True)
    await get_engine(engine_name)(
        app,
        sock,
        options,
        shutdown_trigger=trio.sleep_forever,
        task_status=trio.TASK_STATUS_IGNORED,
    )


if __name__ == "__main__":
    # python -m tests.engines.test_websocket_conformance [triosvc|hypercorn] [HOST:PORT]
    engine_name = sys.argv[1] if len(sys.argv) > 1 else "triosvc"
    address = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:9001"
    trio.run(partial(serve, engine_name, address))
