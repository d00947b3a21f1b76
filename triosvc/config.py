"""The schema of triosvc's own config keys: defaults, validation, the YAML file loader."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, BinaryIO, Final

import attrs
import yaml

from triosvc.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "DEFAULTS",
    "Address",
    "Config",
    "HubSettings",
    "Settings",
    "load_cert_chain",
    "load_config_file",
    "parse_address",
    "parse_define",
]

_HUB_KEY: Final = "WEBSOCKET_HUB_CONFIG"
_HUB_DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "max_connections": 1000,
        "heartbeat_interval": 30,
        "max_message_size": 1048576,
        "send_buffer": 256,
    }
)

DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "WEB_SERVER_ADDRESS": "0.0.0.0:8000",
        "WEB_SERVER_ENGINE": "triosvc",
        "WEB_SERVER_MAX_WORKERS": 10,
        "WEB_SERVER_TIMEOUT": 30,
        "WEB_SERVER_MAX_BODY_SIZE": 16777216,
        "WEB_SERVER_CORS": None,
        "WEB_SERVER_DEBUG": False,
        # PEM files: with both set, the server speaks only TLS (https://, wss://).
        "WEB_SERVER_CERTFILE": None,
        "WEB_SERVER_KEYFILE": None,
        # Request headers with this prefix become worker context data.
        "WEB_SERVER_CONTEXT_HEADER_PREFIX": "X-Triosvc-",
        # Observability (triosvc.web.observability): one access-log line per request,
        # liveness and readiness answers under a path, Prometheus metrics at a path.
        "WEB_SERVER_ACCESS_LOG": True,
        "WEB_SERVER_HEALTH_PATH": None,
        "WEB_SERVER_METRICS": False,
        "WEBSOCKET_PATH": "/ws",
        _HUB_KEY: _HUB_DEFAULTS,
        "SHUTDOWN_GRACE_PERIOD": 10,
        "BROKER_URL": "memory://",
        "RPC_TIMEOUT": 30,
        "LOGGING": None,
    }
)
"""Every key triosvc reads, with its default. Other keys belong to the application."""

_OWN_PREFIXES: Final = ("WEB_", "WEBSOCKET_", "RPC_", "BROKER_", "SHUTDOWN_")
_OWN_NAMES: Final = frozenset({"LOGGING"})
_ANY_HOST: Final = "0.0.0.0"
_MAX_SHOWN: Final = 80
_SUGGESTION_CUTOFF: Final = 0.6  # difflib's own default


def _config_error(message: str) -> ConfigurationError:
    # The CLI prints the message as the program's one line on stderr.
    return ConfigurationError(" ".join(line.strip() for line in message.splitlines()))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _error(key: str, value: object, expected: str) -> ConfigurationError:
    return _config_error(f"{key}={_show(value)}: {expected}")


# --- addresses -----------------------------------------------------------------------------------

_PORT: Final = re.compile(r"[0-9]+")
_HOST_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_ADDRESS_FORMS: Final = "expected [host:]port, [ipv6]:port or fd://N"
#: ``fd://N``: a listening socket inherited as file descriptor N (``--workers``, systemd).
_FD_ADDRESS = re.compile(r"fd://([0-9]{1,9})")


class _InvalidAddress(Exception):
    """What an address should have looked like; the caller adds which key held it."""


@attrs.frozen
class Address:
    """Where a server listens: a host (a name, unresolved, or an IP address) and a port.

    Port 0 asks the operating system for a free port. ``fd`` is set instead for an
    inherited listening socket (``fd://N``), which is used as it is.
    """

    host: str
    port: int
    fd: int | None = None

    def __str__(self) -> str:
        if self.fd is not None:
            return f"fd://{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(value: object) -> Address:
    """Parse ``"host:port"``, ``"port"``, ``":port"``, ``"[ipv6]:port"``, an int port, or
    ``"fd://N"`` (an inherited listening socket).

    A missing host means every interface (``0.0.0.0``). Host names are checked for form only,
    never resolved.

    Raises:
        ConfigurationError: anything else, or a port outside 0..65535.
    """
    try:
        return _parse_address(value)
    except _InvalidAddress as exc:
        raise _config_error(f"invalid address {_show(value)}: {exc}") from None


def _parse_address(value: object) -> Address:
    if isinstance(value, int) and not isinstance(value, bool):
        return Address(_ANY_HOST, _port(value))
    if not isinstance(value, str):
        raise _InvalidAddress(_ADDRESS_FORMS)
    if fd := _FD_ADDRESS.fullmatch(value):
        return Address("", 0, int(fd[1]))
    if value.startswith("["):
        inner, bracket, port_text = value[1:].partition("]:")
        if not bracket:
            raise _InvalidAddress("expected [ipv6]:port")
        try:
            host = str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise _InvalidAddress("expected an IPv6 address inside the brackets") from None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            host, port_text = _ANY_HOST, value
        elif not host:
            host = _ANY_HOST
        elif ":" in host:
            if _is_ipv6(value) or _is_ipv6(host):
                raise _InvalidAddress("expected an IPv6 host in brackets, as in [::1]:8000")
            raise _InvalidAddress("expected a host name or an IP address before :port")
        else:
            _check_host(host)
    if not _PORT.fullmatch(port_text):
        raise _InvalidAddress(_ADDRESS_FORMS)
    return Address(host, _port(int(port_text)))


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise _InvalidAddress("expected a port from 0 to 65535 (0 picks a free port)")
    return port


def _check_host(host: str) -> None:
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _InvalidAddress("expected a host name or an IP address before :port")
    # All-numeric names are IPv4 addresses, so 999.1.1.1 is a mistake rather than a name.
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _InvalidAddress("expected a valid IPv4 address before :port") from None


# --- typed settings ------------------------------------------------------------------------------


def _redact_url(value: object) -> object:
    """Hide the password of a URL, which may reach a log or a terminal."""
    if not isinstance(value, str):
        return value
    try:
        parts = urllib.parse.urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if not password:
        return value
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _show_url(value: object) -> str:
    return _show(_redact_url(value))


@attrs.frozen
class HubSettings:
    """The WebSocket hub's limits (SPEC §5.3); a ``heartbeat_interval`` of 0 disables pings."""

    max_connections: int
    heartbeat_interval: float
    max_message_size: int
    send_buffer: int


@attrs.frozen
class Settings:
    """The typed view of triosvc's own keys that the framework reads (SPEC §7)."""

    address: Address
    engine: str
    max_workers: int
    timeout: float
    max_body_size: int
    cors: Mapping[str, object] | None
    debug: bool
    context_header_prefix: str
    websocket_path: str
    hub: HubSettings
    shutdown_grace_period: float
    broker_url: str = attrs.field(repr=_show_url)
    rpc_timeout: float
    logging: Mapping[str, object] | None
    #: PEM certificate (chain) and private key paths; both or neither (TLS off).
    certfile: str | None = None
    keyfile: str | None = None
    #: One ``triosvc.access`` log line per HTTP request and per WebSocket connection.
    access_log: bool = True
    #: Where liveness (``<path>/live``) and readiness (``<path>/ready``) are answered;
    #: None: nowhere.
    health_path: str | None = None
    #: Where Prometheus metrics are answered, or None when metrics are off.
    metrics_path: str | None = None

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def health_paths(self) -> tuple[str, str] | None:
        """The liveness and readiness paths, or None without health answers."""
        return _health_paths(self.health_path)


def _health_paths(health_path: str | None) -> tuple[str, str] | None:
    if health_path is None:
        return None
    base = health_path.rstrip("/")
    return f"{base}/live", f"{base}/ready"


def _integer(key: str, value: object, minimum: int, expected: str) -> int:
    # bool is an int subclass; `true` for a count is a mistake, not 1.
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    raise _error(key, value, expected)


def _seconds(key: str, value: object, *, zero_allowed: bool, expected: str) -> float:
    # NaN fails both comparisons; .inf passes, as "no limit".
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (value > 0 or (zero_allowed and value == 0))
    ):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            return math.inf
    raise _error(key, value, expected)


def _optional_mapping(key: str, value: object, expected: str) -> Mapping[str, object] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        # A copy, so that changing the caller's dict later cannot change the config.
        return MappingProxyType(dict(value))
    raise _error(key, value, expected)


_HEADER_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_URL_PATH: Final = re.compile(r"/[^\s?#]*")
_REDIS_DB: Final = re.compile(r"/?|/[0-9]+")
_URL_CHARS: Final = re.compile(r"[!-~]+")  # urlsplit silently drops tabs and newlines


def _engine(value: object) -> str:
    key = "WEB_SERVER_ENGINE"
    if value in ("hypercorn", "triosvc"):
        return str(value)
    raise _error(key, value, "expected 'hypercorn' or 'triosvc'")


def _is_redis_url(url: str) -> bool:
    if not _URL_CHARS.fullmatch(url):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not 0..65535
    except ValueError:
        return False
    return (
        parts.scheme == "redis"
        and bool(parts.hostname)
        and port != 0
        and _REDIS_DB.fullmatch(parts.path) is not None
        and not parts.query
        and not parts.fragment
    )


# memory://<name>: a separate broker inside the process (tests, several embedded apps).
_MEMORY_URL: Final = re.compile(r"memory://[A-Za-z0-9_.-]{0,100}")


def _broker_url(value: object) -> str:
    if isinstance(value, str) and _MEMORY_URL.fullmatch(value):
        return value
    if isinstance(value, str) and _is_redis_url(value):
        return value
    raise _config_error(
        f"BROKER_URL={_show_url(value)}: expected 'memory://' or 'redis://host[:port][/db]'"
        " (or 'memory://<name>' for a separate in-process broker: letters, digits, _ . -)"
    )


#: A static URL path for the answers triosvc gives itself: no converters, query or spaces.
_STATIC_PATH: Final = re.compile(r"/[^\s?#<>]*")
_METRICS_KEY: Final = "WEB_SERVER_METRICS"
_HEALTH_KEY: Final = "WEB_SERVER_HEALTH_PATH"
#: Where ``WEB_SERVER_METRICS: true`` answers, as Prometheus scrapes by default.
DEFAULT_METRICS_PATH: Final = "/metrics"


def _health_path(value: object) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, str) and _STATIC_PATH.fullmatch(value):
        return value
    raise _error(
        _HEALTH_KEY,
        value,
        "expected a URL path such as '/health' (liveness at /health/live, readiness at"
        " /health/ready), or null for none",
    )


def _metrics_path(value: object, health_paths: tuple[str, str] | None) -> str | None:
    if value is False:
        return None
    if value is True:
        path = DEFAULT_METRICS_PATH
    elif isinstance(value, str) and _STATIC_PATH.fullmatch(value):
        path = value
    else:
        raise _error(_METRICS_KEY, value, "expected true, false or a URL path such as '/metrics'")
    if health_paths is not None and path in health_paths:
        raise _error(_METRICS_KEY, value, f"{path} is where {_HEALTH_KEY} answers already")
    try:
        import prometheus_client  # noqa: F401 - only whether it is there
    except ImportError:
        raise _error(
            _METRICS_KEY,
            value,
            "metrics need the prometheus_client package: pip install 'triosvc[metrics]'",
        ) from None
    return path


_HUB_NAMES: Final = ", ".join(_HUB_DEFAULTS)


def _hub(value: object) -> tuple[HubSettings, Mapping[str, object]]:
    if not isinstance(value, Mapping):
        raise _error(_HUB_KEY, value, f"expected a mapping with keys among {_HUB_NAMES}")
    # Key by key, so that giving one limit keeps the defaults of the others.
    merged = dict(_HUB_DEFAULTS)
    for sub, sub_value in value.items():
        if sub not in _HUB_DEFAULTS:
            hint = _suggest(sub, _HUB_DEFAULTS)
            expected = f"did you mean {hint}?" if hint else f"expected one of {_HUB_NAMES}"
            raise _error(f"{_HUB_KEY}.{sub}", sub_value, f"unknown hub setting; {expected}")
        merged[sub] = sub_value

    def name(sub: str) -> str:
        return f"{_HUB_KEY}.{sub}"

    hub = HubSettings(
        max_connections=_integer(
            name("max_connections"), merged["max_connections"], 1, "expected an integer >= 1"
        ),
        heartbeat_interval=_seconds(
            name("heartbeat_interval"),
            merged["heartbeat_interval"],
            zero_allowed=True,
            expected="expected a number of seconds >= 0 (0 disables heartbeats)",
        ),
        max_message_size=_integer(
            name("max_message_size"),
            merged["max_message_size"],
            1,
            "expected a number of bytes >= 1",
        ),
        send_buffer=_integer(
            name("send_buffer"), merged["send_buffer"], 1, "expected a number of messages >= 1"
        ),
    )
    return hub, MappingProxyType(merged)


_CERT_KEY: Final = "WEB_SERVER_CERTFILE"
_KEY_KEY: Final = "WEB_SERVER_KEYFILE"


class _EncryptedKey(Exception):
    """Raised by the password callback: the key needs a password, which triosvc never has."""


def _never_a_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _EncryptedKey


def load_cert_chain(context: ssl.SSLContext, certfile: str, keyfile: str) -> None:
    """``context.load_cert_chain`` that refuses an encrypted key rather than prompting.

    Raises:
        ConfigurationError: the key is encrypted.
        OSError, ssl.SSLError: as ``load_cert_chain``.
    """
    try:
        context.load_cert_chain(certfile, keyfile, password=_never_a_password)
    except _EncryptedKey:
        raise _error(
            _KEY_KEY, keyfile, "the key is encrypted; expected an unencrypted PEM private key"
        ) from None


def _tls_path(key: str, value: object) -> str | None:
    if value is None:
        return None
    path = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(path, str) or not path:
        raise _error(key, value, "expected the path of a PEM file, or null")
    # Opened here so that a missing or unreadable file is named precisely, before listening.
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise _error(key, path, "file not found") from None
    except OSError as exc:
        raise _error(key, path, f"cannot read the file: {exc.strerror or exc}") from None
    return path


def _tls(certfile_value: object, keyfile_value: object) -> tuple[str | None, str | None]:
    """The certificate and key paths, checked by loading them; (None, None) without TLS."""
    if (certfile_value is None) != (keyfile_value is None):
        given, value, missing = (
            (_CERT_KEY, certfile_value, _KEY_KEY)
            if keyfile_value is None
            else (_KEY_KEY, keyfile_value, _CERT_KEY)
        )
        raise _error(given, value, f"TLS needs {missing} as well (both or neither)")
    certfile = _tls_path(_CERT_KEY, certfile_value)
    keyfile = _tls_path(_KEY_KEY, keyfile_value)
    if certfile is None or keyfile is None:
        return None, None
    # A bare context: cheap, unlike the default one's trust store, which serving never needs.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=certfile)
    except (ssl.SSLError, OSError):
        raise _error(_CERT_KEY, certfile, "expected a PEM certificate (chain)") from None
    try:
        load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), certfile, keyfile)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise _error(
                _KEY_KEY, keyfile, f"the key does not match the certificate in {_CERT_KEY}"
            ) from None
        raise _error(_KEY_KEY, keyfile, "expected a PEM private key") from None
    except OSError as exc:  # the file changed meanwhile
        raise _error(_KEY_KEY, keyfile, f"cannot read the file: {exc.strerror or exc}") from None
    return certfile, keyfile


def _is_own_key(key: str) -> bool:
    return key.startswith(_OWN_PREFIXES) or key in _OWN_NAMES


def _suggest(key: object, known: Iterable[str]) -> str | None:
    """The known name closest to ``key``, if any is close enough to be a likely typo."""
    if not isinstance(key, str):
        return None
    # A name in the key's own group (same first word) wins over a closer one in another group:
    # WEB_TIMEOUT means WEB_SERVER_TIMEOUT rather than RPC_TIMEOUT.
    candidates = [(_closeness(key, name), name) for name in known]
    close = [
        (shared > 0, ratio, name)
        for (shared, ratio), name in candidates
        if ratio >= _SUGGESTION_CUTOFF
    ]
    return max(close)[2] if close else None


def _closeness(key: str, name: str) -> tuple[int, float]:
    """How many leading words two names share, and how alike the rest of them is (0..1)."""
    # Most keys share WEB_SERVER_, which makes any two look alike to difflib: compare what
    # follows the words they share, so WEB_SERVER_HOST does not suggest WEB_SERVER_CORS.
    key_words, name_words = key.split("_"), name.split("_")
    shared = 0
    while shared < min(len(key_words), len(name_words)) and key_words[shared] == name_words[shared]:
        shared += 1
    key_rest, name_rest = "_".join(key_words[shared:]), "_".join(name_words[shared:])
    if not key_rest or not name_rest:  # one extends the other: WEBSOCKET_HUB, RPC_TIMEOUTS
        return shared, 1.0 if shared else 0.0
    return shared, difflib.SequenceMatcher(None, key_rest, name_rest).ratio()


def _validate(mapping: object) -> tuple[Mapping[str, object], Settings]:
    """Merge ``mapping`` over DEFAULTS, check every triosvc key, and build the typed view."""
    if not isinstance(mapping, Mapping):
        raise _config_error(f"config must be a mapping of KEY: value, got {type(mapping).__name__}")
    data: dict[str, object] = dict(DEFAULTS)
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise _error(repr(key), value, "config keys must be strings")
        if _is_own_key(key) and key not in DEFAULTS:
            hint = _suggest(key, DEFAULTS)
            why = (
                f"did you mean {hint}?"
                if hint
                else "names starting with WEB_, WEBSOCKET_, RPC_, BROKER_ or SHUTDOWN_ are"
                " reserved for triosvc's settings"
            )
            # The value is left out: an unknown key may well hold a secret.
            raise _config_error(f"{key}: unknown triosvc key; {why}")
        data[key] = value

    try:
        address = _parse_address(data["WEB_SERVER_ADDRESS"])
    except _InvalidAddress as exc:
        raise _error("WEB_SERVER_ADDRESS", data["WEB_SERVER_ADDRESS"], str(exc)) from None
    hub, hub_data = _hub(data[_HUB_KEY])
    certfile, keyfile = _tls(data[_CERT_KEY], data[_KEY_KEY])

    debug = data["WEB_SERVER_DEBUG"]
    if not isinstance(debug, bool):
        raise _error("WEB_SERVER_DEBUG", debug, "expected true or false")
    prefix = data["WEB_SERVER_CONTEXT_HEADER_PREFIX"]
    if not isinstance(prefix, str) or not _HEADER_TOKEN.fullmatch(prefix):
        raise _error(
            "WEB_SERVER_CONTEXT_HEADER_PREFIX",
            prefix,
            "expected a non-empty header-name prefix such as 'X-Triosvc-'",
        )
    path = data["WEBSOCKET_PATH"]
    if not isinstance(path, str) or not _URL_PATH.fullmatch(path):
        raise _error(
            "WEBSOCKET_PATH", path, "expected a URL path starting with '/' (no query or spaces)"
        )
    access_log = data["WEB_SERVER_ACCESS_LOG"]
    if not isinstance(access_log, bool):
        raise _error("WEB_SERVER_ACCESS_LOG", access_log, "expected true or false")
    health_path = _health_path(data[_HEALTH_KEY])

    settings = Settings(
        address=address,
        engine=_engine(data["WEB_SERVER_ENGINE"]),
        max_workers=_integer(
            "WEB_SERVER_MAX_WORKERS", data["WEB_SERVER_MAX_WORKERS"], 1, "expected an integer >= 1"
        ),
        timeout=_seconds(
            "WEB_SERVER_TIMEOUT",
            data["WEB_SERVER_TIMEOUT"],
            zero_allowed=False,
            expected="expected a number of seconds greater than 0",
        ),
        max_body_size=_integer(
            "WEB_SERVER_MAX_BODY_SIZE",
            data["WEB_SERVER_MAX_BODY_SIZE"],
            0,
            "expected a number of bytes >= 0",
        ),
        cors=_optional_mapping(
            "WEB_SERVER_CORS", data["WEB_SERVER_CORS"], "expected a mapping of CORS options or null"
        ),
        debug=debug,
        context_header_prefix=prefix,
        websocket_path=path,
        hub=hub,
        shutdown_grace_period=_seconds(
            "SHUTDOWN_GRACE_PERIOD",
            data["SHUTDOWN_GRACE_PERIOD"],
            zero_allowed=True,
            expected="expected a number of seconds >= 0",
        ),
        broker_url=_broker_url(data["BROKER_URL"]),
        rpc_timeout=_seconds(
            "RPC_TIMEOUT",
            data["RPC_TIMEOUT"],
            zero_allowed=False,
            expected="expected a number of seconds greater than 0",
        ),
        logging=_optional_mapping(
            "LOGGING", data["LOGGING"], "expected a logging.config.dictConfig mapping or null"
        ),
        certfile=certfile,
        keyfile=keyfile,
        access_log=access_log,
        health_path=health_path,
        metrics_path=_metrics_path(data[_METRICS_KEY], _health_paths(health_path)),
    )
    # The mapping keeps values as given (numbers stay ints), in their normal form.
    data["WEB_SERVER_ADDRESS"] = str(address)
    data[_HUB_KEY] = hub_data
    data["WEB_SERVER_CORS"] = settings.cors
    data["LOGGING"] = settings.logging
    data[_CERT_KEY], data[_KEY_KEY] = certfile, keyfile
    return MappingProxyType(data), settings


# --- the config mapping --------------------------------------------------------------------------


class Config(Mapping[str, object]):
    """An immutable, validated config: the user's keys merged over :data:`DEFAULTS`.

    ``WEBSOCKET_HUB_CONFIG`` is merged key by key. Application keys (outside triosvc's
    prefixes) pass through unchanged. :attr:`settings` is the typed view of triosvc's keys.

    Raises:
        ConfigurationError: on the first bad key, with one line naming the key, the value
            and what is expected.
    """

    __slots__ = ("_data", "_settings")
    _data: Mapping[str, object]
    _settings: Settings

    def __init__(self, mapping: Mapping[str, object] | None = None) -> None:
        if isinstance(mapping, Config):
            data, settings = mapping._data, mapping._settings
        else:
            data, settings = _validate({} if mapping is None else mapping)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_settings", settings)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Config is immutable; use evolve() to get a changed copy")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Config is immutable; use evolve() to get a changed copy")

    @property
    def settings(self) -> Settings:
        """The typed, validated values of triosvc's own keys."""
        return self._settings

    def evolve(self, **changes: object) -> Config:
        """A new validated Config with the keys in ``changes`` replaced."""
        return Config({**self._data, **changes})

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        # Only what differs from the defaults, and application values never: they hold secrets.
        parts = [
            f"{key}={_show_url(value) if key == 'BROKER_URL' else _show(value)}"
            for key, value in self._data.items()
            if key in DEFAULTS and value != DEFAULTS[key]
        ]
        application = [key for key in self._data if key not in DEFAULTS]
        if application:
            parts.append(f"application keys: {', '.join(application)}")
        return f"<Config {'; '.join(parts) or 'defaults'}>"


# --- YAML files and --define ---------------------------------------------------------------------

_VARIABLE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")
# Tags a substituted plain scalar may take; anything else (merge keys, =) stays a string.
_RETYPED_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "timestamp")
)


class _Loader(yaml.SafeLoader):
    """A safe loader that replaces ``${VAR}`` and ``${VAR:default}`` in scalars."""

    def __init__(self, stream: BinaryIO, source: str, environ: Mapping[str, str]) -> None:
        super().__init__(stream)
        self._source = source
        self._environ = environ

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        node = super().compose_node(parent, index)
        if not (isinstance(event, yaml.ScalarEvent) and isinstance(node, yaml.ScalarNode)):
            return node
        value: str = node.value
        if "${" not in value:
            return node

        def lookup(match: re.Match[str]) -> str:
            name: str = match.group(1)
            default: str | None = match.group(2)
            found = self._environ.get(name, default)
            if found is None:
                line = node.start_mark.line + 1 if node.start_mark else "?"
                raise _config_error(
                    f"{self._source}, line {line}: environment variable {name} is not set"
                    f" (give a default with ${{{name}:default}})"
                )
            return found

        text = _VARIABLE.sub(lookup, value)
        node.value = text
        # An implicitly tagged plain scalar is typed again from its new text, through the
        # resolver alone, so the text gives a scalar and never YAML structure. An empty result
        # stays "" rather than becoming null.
        if event.tag is None and event.style is None and text:
            tag = self.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
            node.tag = tag if tag in _RETYPED_TAGS else "tag:yaml.org,2002:str"
        return node


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f"not valid YAML: {exc}"


def load_config_file(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Read a YAML config file, replacing ``${VAR}`` and ``${VAR:default}`` from ``environ``.

    Substitution is textual, inside every string scalar. A plain (unquoted) scalar is then
    typed again as YAML would (``${T:30}`` gives 30, ``${DEBUG:false}`` gives False); a
    quoted one stays a string. The result is not validated: pass it to :class:`Config`.

    Args:
        path: the file.
        environ: the variables; ``os.environ`` by default.

    Raises:
        ConfigurationError: naming the file, when it is missing or unreadable, is not YAML,
            is not a mapping at the top level, or uses an unset variable without a default.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as stream:
            try:
                # The loader reads (and may reject) the first bytes as it is made.
                loader = _Loader(stream, source, os.environ if environ is None else environ)
                try:
                    data: object = loader.get_single_data()
                finally:
                    loader.dispose()
            except yaml.YAMLError as exc:
                raise _config_error(f"{source}: {_describe_yaml_error(exc)}") from None
    except FileNotFoundError:
        raise _config_error(f"{source}: config file not found") from None
    except OSError as exc:
        raise _config_error(f"{source}: cannot read config file: {exc.strerror or exc}") from None
    if data is None:  # an empty file
        return {}
    if not isinstance(data, dict):
        raise _config_error(
            f"{source}: expected a mapping of KEY: value at the top level,"
            f" got {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise _config_error(f"{source}: config keys must be strings, got {_show(key)}")
    return dict(data)


def parse_define(text: str) -> tuple[str, object]:
    """Parse the CLI's ``--define KEY=VALUE``; the value is YAML (``5`` is an int).

    An empty value gives ``""``.

    Raises:
        ConfigurationError: without ``=``, with an empty key, or when the value is not YAML.
    """
    key, equals, raw = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise _config_error(f"--define expects KEY=VALUE, got {_show(text)}")
    if not raw.strip():
        return key, ""
    try:
        value: object = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise _config_error(f"--define {key}={_show(raw)}: {_describe_yaml_error(exc)}") from None
    return key, value
