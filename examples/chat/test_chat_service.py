"""Tests of the chat service over a real WebSocket, and of the files it serves.

The service runs with the plugin's fixtures (``runner_factory``, ``web_config``,
``web_session``); each ``Peer`` is one WebSocket client made with trio-websocket, as a
browser tab would be. Every test runs under ``trio.fail_after``, so that a missing
message fails the test instead of stalling the run.

Ordering makes "X got nothing" checkable without waiting: the hub queues a socket's
messages in the order they are made, so when a peer's own call returns, everything
sent to it before that call is already in front of the reply (see ``Peer.call``).

The last section tests the methods without a socket, with ``triosvc.testing``'s helpers:
``worker_factory`` (the hub mocked) for what no client can make happen on cue, and
``entrypoint_hook`` with ``replace_dependencies`` to drive the running service's
disconnect hook by hand.
"""

import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from unittest import mock

import pytest
import trio
import trio_websocket
from chat_service import (
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    ChatService,
    ChatStore,
    NotJoined,
    UnknownNickname,
)

from triosvc.exceptions import ConnectionNotFound
from triosvc.runners import ServiceRunner
from triosvc.testing.services import entrypoint_hook, replace_dependencies, worker_factory

#: Seconds any one test may take: a local server answers in milliseconds.
TIMEOUT = 10


class RemoteError(Exception):
    """An error frame: the service refused a call."""

    def __init__(self, exc_type: str, value: str) -> None:
        super().__init__(f"{exc_type}: {value}")
        self.exc_type = exc_type
        self.value = value


class Peer:
    """One WebSocket client: calls methods, and keeps the events that arrive meanwhile."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.socket_id = ""
        self.events: deque[tuple[str, object]] = deque()  # (event, data), oldest first
        self._ids = itertools.count(1)

    async def start(self) -> None:
        frame = await self._receive()
        assert frame["type"] == "event"
        assert frame["event"] == "connected"
        self.socket_id = frame["data"]["socket_id"]

    async def call(self, method: str, **data: object) -> object:
        """Call ``method``; its result, or RemoteError. Events before the reply are kept."""
        correlation_id = next(self._ids)
        await self.ws.send_message(
            json.dumps({"method": method, "data": data, "correlation_id": correlation_id})
        )
        while True:
            frame = await self._receive()
            if frame["type"] == "event":
                self.events.append((frame["event"], frame["data"]))
                continue
            assert frame["type"] == "result"
            assert frame["correlation_id"] == correlation_id
            if frame["success"]:
                return frame["data"]
            raise RemoteError(frame["error"]["exc_type"], frame["error"]["value"])

    async def event(self) -> tuple[str, object]:
        """The next event: one kept by ``call``, or the next to arrive."""
        if self.events:
            return self.events.popleft()
        frame = await self._receive()
        assert frame["type"] == "event", frame
        return frame["event"], frame["data"]

    async def forget_events(self) -> None:
        """Drop every event sent so far (a round trip brings them in)."""
        await self.call("rooms")
        self.events.clear()

    async def no_events(self) -> None:
        """Assert that nothing was sent to this peer (a round trip flushes what was)."""
        await self.call("rooms")
        assert list(self.events) == []

    async def _receive(self) -> dict[str, object]:
        frame = json.loads(await self.ws.get_message())
        assert isinstance(frame, dict)
        return frame


OpenPeer = Callable[[], Awaitable[Peer]]


@pytest.fixture
async def connect(runner_factory, web_config) -> AsyncIterator[OpenPeer]:
    """The chat service, running; ``await connect()`` opens one more WebSocket to it.

    Each socket lives in a task of this fixture's nursery (trio-websocket's connection
    is a context manager with a nursery of its own), until the test ends.
    """
    # No heartbeats: with them on, hypercorn's ping task outlives each closed socket by
    # up to one interval and holds the runner's stop for SHUTDOWN_GRACE_PERIOD + 1 s.
    web_config["WEBSOCKET_HUB_CONFIG"] = {"heartbeat_interval": 0}
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, ChatService)
    url = f"ws://{web_config['WEB_SERVER_ADDRESS']}/ws"
    done = trio.Event()

    async def keep_open(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio_websocket.open_websocket_url(
            url, connect_timeout=5, disconnect_timeout=2
        ) as ws:
            peer = Peer(ws)
            await peer.start()
            task_status.started(peer)
            await done.wait()

    async with trio.open_nursery() as nursery:

        async def open_peer() -> Peer:
            return await nursery.start(keep_open)

        yield open_peer
        done.set()


async def joined(connect: OpenPeer, nickname: str, room: str = "lobby") -> Peer:
    """A peer that joined ``room`` as ``nickname``, its own ``joined`` event read."""
    peer = await connect()
    await peer.call("join", room=room, nickname=nickname)
    assert await peer.event() == ("joined", {"room": room, "nickname": nickname})
    return peer


# --- join ----------------------------------------------------------------------------------------


async def test_join_tells_the_room_and_lists_its_members(connect):
    with trio.fail_after(TIMEOUT):
        ada = await connect()
        assert await ada.call("join", room="lobby", nickname="ada") == {
            "room": "lobby",
            "nickname": "ada",
            "members": ["ada"],
        }
        assert await ada.event() == ("joined", {"room": "lobby", "nickname": "ada"})

        bob = await connect()
        result = await bob.call("join", room="lobby", nickname="bob")
        assert result["members"] == ["ada", "bob"]
        assert await bob.event() == ("joined", {"room": "lobby", "nickname": "bob"})
        assert await ada.event() == ("joined", {"room": "lobby", "nickname": "bob"})

        assert await ada.call("rooms") == ["lobby"]
        await ada.call("join", room="dev", nickname="ada")  # a second room
        assert await ada.call("rooms") == ["dev", "lobby"]
        assert await bob.call("rooms") == ["lobby"]


async def test_joining_twice_is_harmless(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        result = await ada.call("join", room="lobby", nickname="ada")
        assert result["members"] == ["ada"]
        await ada.no_events()  # no second "joined"


async def test_names_are_trimmed(connect):
    with trio.fail_after(TIMEOUT):
        ada = await connect()
        result = await ada.call("join", room="  lobby ", nickname=" ada ")
        assert result == {"room": "lobby", "nickname": "ada", "members": ["ada"]}


async def test_a_nickname_belongs_to_one_socket(connect):
    with trio.fail_after(TIMEOUT):
        await joined(connect, "ada")
        bob = await connect()
        with pytest.raises(RemoteError) as error:
            await bob.call("join", room="lobby", nickname="ADA")  # case does not matter
        assert error.value.exc_type == "NicknameTaken"
        assert "'ADA' is taken" in error.value.value
        assert await bob.call("rooms") == []  # the socket is still open and usable


async def test_the_nickname_changes_only_outside_rooms(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        with pytest.raises(RemoteError) as error:
            await ada.call("join", room="dev", nickname="lovelace")
        assert error.value.exc_type == "InvalidInput"
        assert "leave every room" in error.value.value

        await ada.call("leave", room="lobby")
        await ada.call("join", room="dev", nickname="lovelace")
        bob = await joined(connect, "ada", room="dev")  # the old nickname is free again
        assert (await bob.call("join", room="dev", nickname="ada"))["members"] == [
            "ada",
            "lovelace",
        ]


@pytest.mark.parametrize(
    ("data", "exc_type", "message"),
    [
        ({"room": "", "nickname": "ada"}, "InvalidInput", "room must be a non-empty string"),
        ({"room": "lobby", "nickname": "   "}, "InvalidInput", "nickname must be a non-empty"),
        ({"room": "lobby", "nickname": 7}, "InvalidInput", "nickname must be a non-empty"),
        (
            {"room": "lobby", "nickname": "a" * (MAX_NAME_LENGTH + 1)},
            "InvalidInput",
            f"at most {MAX_NAME_LENGTH} characters",
        ),
        ({"room": "lobby"}, "IncorrectSignature", "nickname"),
        ({"room": "lobby", "nickname": "ada", "colour": "red"}, "IncorrectSignature", "colour"),
    ],
    ids=[
        "empty-room",
        "blank-nickname",
        "nickname-not-a-string",
        "long-nickname",
        "missing",
        "extra",
    ],
)
async def test_join_refuses_bad_input(connect, data, exc_type, message):
    with trio.fail_after(TIMEOUT):
        ada = await connect()
        with pytest.raises(RemoteError) as error:
            await ada.call("join", **data)
        assert error.value.exc_type == exc_type
        assert message in error.value.value
        assert await ada.call("rooms") == []


# --- say -----------------------------------------------------------------------------------------


async def test_say_reaches_the_room_and_only_it(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        bob = await joined(connect, "bob")
        cyd = await joined(connect, "cyd", room="dev")
        assert await ada.event() == ("joined", {"room": "lobby", "nickname": "bob"})

        assert await ada.call("say", room="lobby", text="hello, lobby") is None
        message = {"room": "lobby", "nickname": "ada", "text": "hello, lobby"}
        assert await ada.event() == ("message", message)
        assert await bob.event() == ("message", message)
        await cyd.no_events()


async def test_say_outside_the_room_is_an_expected_error(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        bob = await joined(connect, "bob", room="dev")
        with pytest.raises(RemoteError) as error:
            await ada.call("say", room="dev", text="can you hear me?")
        assert error.value.exc_type == "NotInRoom"
        assert error.value.value == "you are not in room 'dev'; join it first"
        await bob.no_events()


async def test_say_before_joining_anything(connect):
    with trio.fail_after(TIMEOUT):
        ada = await connect()
        with pytest.raises(RemoteError) as error:
            await ada.call("say", room="lobby", text="hi")
        assert error.value.exc_type == "NotJoined"
        assert "join a room first" in error.value.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "text must be a non-empty string"),
        (" \n ", "text must be a non-empty string"),
        (["hi"], "text must be a non-empty string"),
        ("x" * (MAX_TEXT_LENGTH + 1), f"text must be at most {MAX_TEXT_LENGTH} characters"),
    ],
    ids=["empty", "blank", "not-a-string", "too-long"],
)
async def test_say_refuses_bad_text(connect, text, message):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        with pytest.raises(RemoteError) as error:
            await ada.call("say", room="lobby", text=text)
        assert (error.value.exc_type, error.value.value) == ("InvalidInput", message)
        await ada.no_events()


# --- whisper -------------------------------------------------------------------------------------


async def test_whisper_reaches_its_target_only(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        bob = await joined(connect, "bob")
        cyd = await joined(connect, "cyd")
        await ada.forget_events()  # the "joined" of those who came later
        await bob.forget_events()

        sent = await ada.call("whisper", to_nickname="Bob", text="psst")
        assert sent == {"from": "ada", "to": "bob", "text": "psst"}
        assert await bob.event() == ("private", sent)
        await ada.no_events()
        await cyd.no_events()


async def test_whisper_needs_no_common_room(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        bob = await joined(connect, "bob", room="dev")
        await ada.call("leave", room="lobby")  # ada keeps her nickname
        await ada.call("whisper", to_nickname="bob", text="hi from nowhere")
        assert await bob.event() == (
            "private",
            {"from": "ada", "to": "bob", "text": "hi from nowhere"},
        )


async def test_whisper_to_an_unknown_nickname(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        with pytest.raises(RemoteError) as error:
            await ada.call("whisper", to_nickname="nobody", text="hello?")
        assert error.value.exc_type == "UnknownNickname"
        assert error.value.value == "nobody called 'nobody' is connected"


async def test_whisper_before_joining(connect):
    with trio.fail_after(TIMEOUT):
        await joined(connect, "bob")
        ada = await connect()
        with pytest.raises(RemoteError) as error:
            await ada.call("whisper", to_nickname="bob", text="hi")
        assert error.value.exc_type == "NotJoined"


# --- leave and disconnect ------------------------------------------------------------------------


async def test_leave_tells_the_room_then_unsubscribes(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        bob = await joined(connect, "bob")
        assert await ada.event() == ("joined", {"room": "lobby", "nickname": "bob"})

        assert await ada.call("leave", room="lobby") is None
        left = ("left", {"room": "lobby", "nickname": "ada"})
        assert await ada.event() == left  # the leaver hears it too
        assert await bob.event() == left
        assert await ada.call("rooms") == []

        await bob.call("say", room="lobby", text="still here?")
        assert await bob.event() == (
            "message",
            {"room": "lobby", "nickname": "bob", "text": "still here?"},
        )
        await ada.no_events()

        with pytest.raises(RemoteError) as error:
            await ada.call("leave", room="lobby")
        assert error.value.exc_type == "NotInRoom"
        with pytest.raises(RemoteError) as error:
            await ada.call("say", room="lobby", text="back?")
        assert error.value.exc_type == "NotInRoom"


async def test_disconnect_tells_the_rooms_and_frees_the_nickname(connect):
    with trio.fail_after(TIMEOUT):
        ada = await joined(connect, "ada")
        await ada.call("join", room="dev", nickname="ada")
        bob = await joined(connect, "bob")
        await bob.call("join", room="dev", nickname="bob")
        await bob.forget_events()

        await ada.ws.aclose()
        # one "left" per room ada was in, in the order of their names
        assert await bob.event() == ("left", {"room": "dev", "nickname": "ada"})
        assert await bob.event() == ("left", {"room": "lobby", "nickname": "ada"})

        with pytest.raises(RemoteError) as error:
            await bob.call("whisper", to_nickname="ada", text="are you there?")
        assert error.value.exc_type == "UnknownNickname"

        again = await joined(connect, "ada")  # the nickname is free for someone else
        assert await bob.event() == ("joined", {"room": "lobby", "nickname": "ada"})
        await bob.call("whisper", to_nickname="ada", text="welcome back")
        assert (await again.event())[0] == "private"


async def test_disconnect_before_joining_is_quiet(connect):
    with trio.fail_after(TIMEOUT):
        bob = await joined(connect, "bob")
        ada = await connect()
        await ada.ws.aclose()
        await bob.no_events()


# --- the page and its files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "snippet"),
    [
        ("/", "text/html; charset=utf-8", b'<ul id="messages"'),
        ("/static/index.html", "text/html; charset=utf-8", b'<ul id="messages"'),
        ("/static/triosvc.js", "text/javascript; charset=utf-8", b"export class TriosvcClient"),
        ("/static/chat.js", "text/javascript; charset=utf-8", b'from "./triosvc.js"'),
        ("/static/chat.css", "text/css; charset=utf-8", b"#messages"),
    ],
)
async def test_the_page_and_its_files(
    runner_factory, web_config, web_session, path, content_type, snippet
):
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, ChatService)
        response = await web_session.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert snippet in response.content


async def test_an_unknown_file_is_404(runner_factory, web_config, web_session):
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, ChatService)
        response = await web_session.get("/static/nope.js")
    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "message": "no static file 'nope.js'"}


async def raw_get(address: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` exactly as written (HTTP clients would tidy ``..`` away).

    Returns the status, the headers (names in lower case) and the body as sent.
    """
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "target",
    [
        "/static/../chat_service.py",
        "/static/../config.yaml",
        "/static/%2e%2e/chat_service.py",
        "/static/..%2fchat_service.py",
        "/static/..%5cchat_service.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/../static/../conftest.py",
    ],
)
async def test_no_way_out_of_the_static_folder(runner_factory, web_config, target):
    with trio.fail_after(TIMEOUT):
        await runner_factory(web_config, ChatService)
        address = str(web_config["WEB_SERVER_ADDRESS"])
        status, headers, body = await raw_get(address, target)
        if status == 308:  # werkzeug merges "//" into "/" with a redirect: follow it
            location = headers["location"].removeprefix(f"http://{address}")
            assert location.startswith("/static/"), location
            status, headers, body = await raw_get(address, location)
    assert status == 404, body
    assert b"import" not in body
    assert b"root:" not in body


# --- without a socket: triosvc.testing's helpers ------------------------------------------------


async def test_join_subscribes_then_tells_the_room():
    # worker_factory mocks the hub after WebSocketHub (its methods are plain calls, with
    # their signatures checked); the store is a real one.
    service = worker_factory(ChatService, chat=ChatStore())

    result = await service.join("socket-1", room="lobby", nickname="ada")

    assert result == {"room": "lobby", "nickname": "ada", "members": ["ada"]}
    assert service.hub.mock_calls == [
        mock.call.subscribe("socket-1", "lobby"),
        mock.call.broadcast("lobby", "joined", {"room": "lobby", "nickname": "ada"}),
    ]


async def test_whisper_to_a_socket_that_just_went_away():
    # The target's socket is gone, its @on_disconnect not run yet: over real sockets that
    # is a race; with the hub mocked it happens on cue.
    chat = ChatStore()
    chat.name("socket-1", "ada")
    chat.name("socket-2", "bob")
    service = worker_factory(ChatService, chat=chat)
    service.hub.unicast.side_effect = ConnectionNotFound("no WebSocket socket-2")

    with pytest.raises(UnknownNickname, match="nobody called 'bob'"):
        await service.whisper("socket-1", to_nickname="bob", text="psst")


async def test_disconnect_hook_tells_each_room_and_forgets_the_socket(runner_factory, web_config):
    # The running service, its hub replaced before the start; the hook calls @rpc methods
    # and the @on_disconnect hook with made-up socket ids.
    runner = ServiceRunner(web_config)
    runner.add_service(ChatService)
    hub = replace_dependencies(runner, "hub")
    with trio.fail_after(TIMEOUT):
        await runner_factory(runner)

    async with (
        entrypoint_hook(runner, "chat", "join") as join,
        entrypoint_hook(runner, "chat", "gone") as gone,
        entrypoint_hook(runner, "chat", "say") as say,
    ):
        await join("socket-1", room="lobby", nickname="ada")
        await join("socket-1", room="attic", nickname="ada")
        hub.reset_mock()
        await gone("socket-1")
        with pytest.raises(NotJoined):
            await say("socket-1", room="lobby", text="still here?")

    assert hub.broadcast.call_args_list == [
        mock.call("attic", "left", {"room": "attic", "nickname": "ada"}),
        mock.call("lobby", "left", {"room": "lobby", "nickname": "ada"}),
    ]
