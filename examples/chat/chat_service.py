"""A chat: rooms, messages and whispers over WebSocket RPC, and the page that uses them.

Run it from this folder (``pip install`` triosvc first, see the top-level README)::

    triosvc run --config config.yaml chat_service

(``triosvc run chat_service`` alone works too, listening on every interface at port 8000.)
Then open http://127.0.0.1:8000/ in two browser windows, pick a nickname in each, join
the same room and talk. ``PORT=9000 triosvc run ...`` picks another port. Ctrl+C stops it.

The page (``static/index.html``, ``static/chat.js``) talks to the service through
``static/triosvc.js``, a small dependency-free client for triosvc's WebSocket protocol
(nameko's): ``await client.call("join", {room, nickname})`` calls the ``join`` method
below, and ``client.on("message", handler)`` receives what the hub broadcasts. Any client
that speaks the protocol works, e.g. from Python with trio-websocket::

    {"method": "join", "data": {"room": "lobby", "nickname": "ada"}, "correlation_id": 1}

What it shows:

- ``@rpc`` methods, called as ``method(self, socket_id, **data)``, and the hub
  (``WebSocketHubProvider``): subscribe a socket to a room, broadcast to a room, unicast
  to one socket;
- expected exceptions (``ChatError`` and its subclasses) reaching the client as
  themselves: ``{"exc_type": "NotInRoom", "value": "you are not in room 'x'; ..."}``;
- ``@on_disconnect``, cleaning up after a socket that went away (its hub subscriptions
  are already gone; the store remembers its rooms to tell them);
- a dependency provider holding the service's state (who is who, and where);
- ``@http`` handlers serving the page and its static files, safe against path traversal.

Its tests are ``test_chat_service.py`` (the service over a real WebSocket) and
``test_chat_browser.py`` (two headless Chromium pages chatting): ``python -m pytest
examples/chat``.
"""

from pathlib import Path

import attrs
from werkzeug.security import safe_join
from werkzeug.wrappers import Request, Response

from triosvc.exceptions import ConnectionNotFound, NotFound
from triosvc.extensions import DependencyProvider, WorkerContext
from triosvc.web.handlers import http
from triosvc.web.websocket import WebSocketHubProvider, on_disconnect, rpc

STATIC = Path(__file__).resolve().parent / "static"

#: The files ``/static/`` serves, by suffix; anything else is a 404.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

MAX_NAME_LENGTH = 32
MAX_TEXT_LENGTH = 2000


# --- errors: what the client sees as exc_type ----------------------------------------------------


class ChatError(Exception):
    """A request the chat refuses; the client gets ``exc_type`` (the class name) and the text."""


class InvalidInput(ChatError):
    """A nickname, room or text that is empty, too long or not a string."""


class NicknameTaken(ChatError):
    """Another socket already uses this nickname."""


class NotJoined(ChatError):
    """The socket has no nickname yet: it must join a room first."""


class NotInRoom(ChatError):
    """The socket is not in the room it talks to or leaves."""


class UnknownNickname(ChatError):
    """Nobody connected has this nickname."""


# --- the store and its provider ------------------------------------------------------------------


@attrs.define
class Member:
    socket_id: str
    nickname: str
    rooms: set[str] = attrs.field(factory=set)


class ChatStore:
    """Who is connected under which nickname, and in which rooms.

    Only ``async def`` methods use it, and they all run in trio's thread, so each
    method below runs whole without another worker in between: no lock needed.
    """

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}  # by socket id
        self._nicknames: dict[str, str] = {}  # casefolded nickname -> socket id

    def name(self, socket_id: str, nickname: str) -> Member:
        """Give ``socket_id`` this nickname; it keeps it until it disconnects.

        A socket may change its nickname only while it is in no room, so that the
        people in a room always know who is who.
        """
        key = nickname.casefold()
        owner = self._nicknames.get(key)
        if owner is not None and owner != socket_id:
            raise NicknameTaken(f"the nickname {nickname!r} is taken; pick another one")
        member = self._members.get(socket_id)
        if member is None:
            member = self._members[socket_id] = Member(socket_id, nickname)
        elif member.nickname != nickname:
            if member.rooms:
                raise InvalidInput(
                    f"you are {member.nickname!r} in {', '.join(sorted(member.rooms))}; "
                    "leave every room to change your nickname"
                )
            del self._nicknames[member.nickname.casefold()]
            member.nickname = nickname
        self._nicknames[key] = socket_id
        return member

    def get(self, socket_id: str) -> Member:
        member = self._members.get(socket_id)
        if member is None:
            raise NotJoined("join a room first: nobody knows your nickname yet")
        return member

    def in_room(self, socket_id: str, room: str) -> Member:
        member = self.get(socket_id)
        if room not in member.rooms:
            raise NotInRoom(f"you are not in room {room!r}; join it first")
        return member

    def find(self, nickname: str) -> Member:
        socket_id = self._nicknames.get(nickname.casefold())
        if socket_id is None:
            raise UnknownNickname(f"nobody called {nickname!r} is connected")
        return self._members[socket_id]

    def members_of(self, room: str) -> list[str]:
        return sorted(
            (m.nickname for m in self._members.values() if room in m.rooms), key=str.casefold
        )

    def forget(self, socket_id: str) -> Member | None:
        """Remove a socket that went away; what it was, or None if it never joined."""
        member = self._members.pop(socket_id, None)
        if member is not None:
            del self._nicknames[member.nickname.casefold()]
        return member


class Chat(DependencyProvider):
    """Creates one :class:`ChatStore` when the service starts, for every worker."""

    async def setup(self) -> None:
        self.store = ChatStore()

    async def get_dependency(self, worker_ctx: WorkerContext) -> ChatStore:
        return self.store


# --- the service ---------------------------------------------------------------------------------


class ChatService:
    name = "chat"

    hub = WebSocketHubProvider()
    chat = Chat()

    # -- WebSocket methods: {"method": "join", "data": {"room": ..., "nickname": ...}} ------------

    @rpc(expected_exceptions=ChatError)
    async def join(self, socket_id: str, room: str, nickname: str) -> dict[str, object]:
        """Enter ``room`` as ``nickname``; everyone in it (you too) gets ``joined``."""
        room = _name(room, "room")
        nickname = _name(nickname, "nickname")
        member = self.chat.name(socket_id, nickname)
        if room not in member.rooms:
            self.hub.subscribe(socket_id, room)
            member.rooms.add(room)
            self.hub.broadcast(room, "joined", {"room": room, "nickname": nickname})
        return {"room": room, "nickname": nickname, "members": self.chat.members_of(room)}

    @rpc(expected_exceptions=ChatError)
    async def leave(self, socket_id: str, room: str) -> None:
        """Leave ``room``; everyone in it (you too) gets ``left``."""
        member = self.chat.in_room(socket_id, room)
        self.hub.broadcast(room, "left", {"room": room, "nickname": member.nickname})
        self.hub.unsubscribe(socket_id, room)
        member.rooms.discard(room)

    @rpc(expected_exceptions=ChatError)
    async def say(self, socket_id: str, room: str, text: str) -> None:
        """Send ``text`` to everyone in ``room``, as ``message``."""
        member = self.chat.in_room(socket_id, room)
        text = _text(text)
        self.hub.broadcast(
            room, "message", {"room": room, "nickname": member.nickname, "text": text}
        )

    @rpc(expected_exceptions=ChatError)
    async def whisper(self, socket_id: str, to_nickname: str, text: str) -> dict[str, str]:
        """Send ``text`` to one person only, as ``private``; returns what was sent."""
        sender = self.chat.get(socket_id)
        to_nickname = _name(to_nickname, "to_nickname")
        text = _text(text)
        target = self.chat.find(to_nickname)
        message = {"from": sender.nickname, "to": target.nickname, "text": text}
        try:
            self.hub.unicast(target.socket_id, "private", message)
        except ConnectionNotFound:  # gone a moment ago; its @on_disconnect is on its way
            raise UnknownNickname(f"nobody called {to_nickname!r} is connected") from None
        return message

    @rpc
    async def rooms(self, socket_id: str) -> list[str]:
        """The rooms this socket is in, sorted."""
        return self.hub.get_subscriptions(socket_id)

    @on_disconnect
    async def gone(self, socket_id: str) -> None:
        """Free the nickname and tell the rooms; the hub has already dropped the socket."""
        member = self.chat.forget(socket_id)
        if member is None:
            return
        for room in sorted(member.rooms):
            self.hub.broadcast(room, "left", {"room": room, "nickname": member.nickname})

    # -- the page and its files -------------------------------------------------------------------

    @http("GET", "/")
    def index(self, request: Request) -> Response:
        return _static_file("index.html")

    # Plain ``def`` handlers run in a worker thread: reading a file may block.
    @http("GET", "/static/<path:name>")
    def static(self, request: Request, name: str) -> Response:
        return _static_file(name)


# --- helpers -------------------------------------------------------------------------------------


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    value = value.strip()
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(f"{what} must be at most {MAX_NAME_LENGTH} characters")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("text must be a non-empty string")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidInput(f"text must be at most {MAX_TEXT_LENGTH} characters")
    return value


def _static_file(name: str) -> Response:
    """A file of ``static/``, or 404: never one outside it, nor of an unknown type."""
    # safe_join refuses "..", absolute paths and other ways out of the folder.
    path = safe_join(str(STATIC), name)
    content_type = CONTENT_TYPES.get(Path(name).suffix.lower())
    if path is None or content_type is None or not Path(path).is_file():
        raise NotFound(f"no static file {name!r}")
    response = Response(Path(path).read_bytes(), content_type=content_type)
    response.headers["Cache-Control"] = "no-cache"  # edits show on reload
    return response
