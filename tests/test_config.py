"""Tests of triosvc.config: defaults, validation, addresses, YAML files and --define."""

from __future__ import annotations

import datetime
import math
import re
import socket
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from triosvc.config import (
    DEFAULTS,
    Address,
    Config,
    HubSettings,
    Settings,
    load_config_file,
    parse_address,
    parse_define,
)
from triosvc.exceptions import ConfigurationError
from triosvc.web.server import bind_socket

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

HUB_DEFAULTS = {
    "max_connections": 1000,
    "heartbeat_interval": 30,
    "max_message_size": 1048576,
    "send_buffer": 256,
}

EXPECTED_DEFAULTS = {
    "WEB_SERVER_ADDRESS": "0.0.0.0:8000",
    "WEB_SERVER_ENGINE": "triosvc",
    "WEB_SERVER_MAX_WORKERS": 10,
    "WEB_SERVER_TIMEOUT": 30,
    "WEB_SERVER_MAX_BODY_SIZE": 16777216,
    "WEB_SERVER_CORS": None,
    "WEB_SERVER_DEBUG": False,
    "WEB_SERVER_CERTFILE": None,
    "WEB_SERVER_KEYFILE": None,
    "WEB_SERVER_CONTEXT_HEADER_PREFIX": "X-Triosvc-",
    "WEB_SERVER_ACCESS_LOG": True,
    "WEB_SERVER_HEALTH_PATH": None,
    "WEB_SERVER_METRICS": False,
    "WEBSOCKET_PATH": "/ws",
    "WEBSOCKET_HUB_CONFIG": HUB_DEFAULTS,
    "SHUTDOWN_GRACE_PERIOD": 10,
    "BROKER_URL": "memory://",
    "RPC_TIMEOUT": 30,
    "LOGGING": None,
}


def config_error(mapping: Mapping[str, object], match: str) -> str:
    """Assert that Config(mapping) fails with a one-line message matching ``match``."""
    with pytest.raises(ConfigurationError, match=match) as info:
        Config(mapping)
    return one_line(info.value)


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message
    assert len(message.splitlines()) == 1, message
    return message


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_cover_exactly_the_spec_keys() -> None:
    assert dict(DEFAULTS) == EXPECTED_DEFAULTS
    assert list(DEFAULTS) == list(EXPECTED_DEFAULTS)


def test_defaults_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        DEFAULTS["RPC_TIMEOUT"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        DEFAULTS["WEBSOCKET_HUB_CONFIG"]["send_buffer"] = 1  # type: ignore[index]


@pytest.mark.parametrize("empty", [None, {}])
@pytest.mark.parametrize(("key", "default"), list(EXPECTED_DEFAULTS.items()))
def test_every_key_has_its_default(
    empty: dict[str, object] | None, key: str, default: object
) -> None:
    config = Config(empty)
    assert config[key] == default
    assert type(config[key]) is type(DEFAULTS[key]) or key == "WEBSOCKET_HUB_CONFIG"


def test_default_settings() -> None:
    assert Config().settings == Settings(
        address=Address("0.0.0.0", 8000),
        engine="triosvc",
        max_workers=10,
        timeout=30.0,
        max_body_size=16777216,
        cors=None,
        debug=False,
        context_header_prefix="X-Triosvc-",
        websocket_path="/ws",
        hub=HubSettings(
            max_connections=1000, heartbeat_interval=30.0, max_message_size=1048576, send_buffer=256
        ),
        shutdown_grace_period=10.0,
        broker_url="memory://",
        rpc_timeout=30.0,
        logging=None,
        certfile=None,
        keyfile=None,
    )
    assert not Config().settings.tls


# --- good values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "attribute", "typed"),
    [
        ("WEB_SERVER_ADDRESS", "127.0.0.1:0", "address", Address("127.0.0.1", 0)),
        ("WEB_SERVER_ADDRESS", 9000, "address", Address("0.0.0.0", 9000)),
        ("WEB_SERVER_ENGINE", "hypercorn", "engine", "hypercorn"),
        ("WEB_SERVER_ENGINE", "triosvc", "engine", "triosvc"),
        ("WEB_SERVER_MAX_WORKERS", 1, "max_workers", 1),
        ("WEB_SERVER_MAX_WORKERS", 500, "max_workers", 500),
        ("WEB_SERVER_TIMEOUT", 5, "timeout", 5.0),
        ("WEB_SERVER_TIMEOUT", 0.25, "timeout", 0.25),
        ("WEB_SERVER_TIMEOUT", math.inf, "timeout", math.inf),
        ("WEB_SERVER_MAX_BODY_SIZE", 0, "max_body_size", 0),
        ("WEB_SERVER_MAX_BODY_SIZE", 1024, "max_body_size", 1024),
        ("WEB_SERVER_CORS", {"origins": "*"}, "cors", {"origins": "*"}),
        ("WEB_SERVER_CORS", None, "cors", None),
        ("WEB_SERVER_DEBUG", True, "debug", True),
        ("WEB_SERVER_DEBUG", False, "debug", False),
        ("WEB_SERVER_CONTEXT_HEADER_PREFIX", "X-Ctx-", "context_header_prefix", "X-Ctx-"),
        ("WEB_SERVER_CONTEXT_HEADER_PREFIX", "x", "context_header_prefix", "x"),
        ("WEBSOCKET_PATH", "/", "websocket_path", "/"),
        ("WEBSOCKET_PATH", "/api/socket", "websocket_path", "/api/socket"),
        ("SHUTDOWN_GRACE_PERIOD", 0, "shutdown_grace_period", 0.0),
        ("SHUTDOWN_GRACE_PERIOD", 2.5, "shutdown_grace_period", 2.5),
        ("BROKER_URL", "memory://", "broker_url", "memory://"),
        ("BROKER_URL", "redis://localhost", "broker_url", "redis://localhost"),
        ("BROKER_URL", "redis://redis:6379/0", "broker_url", "redis://redis:6379/0"),
        ("BROKER_URL", "redis://127.0.0.1:6380/", "broker_url", "redis://127.0.0.1:6380/"),
        ("BROKER_URL", "redis://:pw@[::1]:6379/15", "broker_url", "redis://:pw@[::1]:6379/15"),
        ("BROKER_URL", "redis://user:pw@host/2", "broker_url", "redis://user:pw@host/2"),
        ("RPC_TIMEOUT", 1, "rpc_timeout", 1.0),
        ("RPC_TIMEOUT", 0.001, "rpc_timeout", 0.001),
        ("LOGGING", {"version": 1}, "logging", {"version": 1}),
        ("LOGGING", None, "logging", None),
    ],
)
def test_good_values(key: str, value: object, attribute: str, typed: object) -> None:
    config = Config({key: value})
    assert getattr(config.settings, attribute) == typed
    if not isinstance(typed, dict):  # mappings are kept as read-only copies
        assert type(getattr(config.settings, attribute)) is type(typed)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WEB_SERVER_TIMEOUT", 5),
        ("WEB_SERVER_TIMEOUT", 2.5),
        ("RPC_TIMEOUT", 7),
        ("SHUTDOWN_GRACE_PERIOD", 0),
        ("WEB_SERVER_MAX_WORKERS", 3),
        ("BROKER_URL", "redis://h:1/2"),
    ],
)
def test_mapping_keeps_the_value_given(key: str, value: object) -> None:
    config = Config({key: value})
    assert config[key] == value
    assert type(config[key]) is type(value)


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        (8080, "0.0.0.0:8080"),
        ("8080", "0.0.0.0:8080"),
        (":8080", "0.0.0.0:8080"),
        ("localhost:1", "localhost:1"),
        ("[::1]:0", "[::1]:0"),
    ],
)
def test_mapping_keeps_the_address_in_normal_form(given: object, normal: str) -> None:
    config = Config({"WEB_SERVER_ADDRESS": given})
    assert config["WEB_SERVER_ADDRESS"] == normal
    assert parse_address(config["WEB_SERVER_ADDRESS"]) == config.settings.address


def test_huge_timeout_is_infinite() -> None:
    assert Config({"RPC_TIMEOUT": 10**400}).settings.rpc_timeout == math.inf


# --- bad values ----------------------------------------------------------------------------------

NUMBER_KEYS = [
    "WEB_SERVER_MAX_WORKERS",
    "WEB_SERVER_TIMEOUT",
    "WEB_SERVER_MAX_BODY_SIZE",
    "SHUTDOWN_GRACE_PERIOD",
    "RPC_TIMEOUT",
]


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_bool_is_never_a_number(key: str, value: bool) -> None:
    message = config_error({key: value}, f"^{key}={value}: expected ")
    assert "number" in message or "integer" in message


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("sub", ["max_connections", "heartbeat_interval", "max_message_size"])
def test_bool_is_never_a_hub_number(sub: str, value: bool) -> None:
    config_error({"WEBSOCKET_HUB_CONFIG": {sub: value}}, f"^WEBSOCKET_HUB_CONFIG.{sub}={value}: ")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("WEB_SERVER_ADDRESS", "abc", r"^WEB_SERVER_ADDRESS='abc': expected \[host:\]port"),
        ("WEB_SERVER_ADDRESS", 70000, "^WEB_SERVER_ADDRESS=70000: expected a port from 0 to 65535"),
        ("WEB_SERVER_ADDRESS", -1, "^WEB_SERVER_ADDRESS=-1: expected a port from 0 to 65535"),
        ("WEB_SERVER_ADDRESS", None, "^WEB_SERVER_ADDRESS=None: expected "),
        ("WEB_SERVER_ADDRESS", True, "^WEB_SERVER_ADDRESS=True: expected "),
        (
            "WEB_SERVER_ENGINE",
            "uvicorn",
            "^WEB_SERVER_ENGINE='uvicorn': expected 'hypercorn' or 'triosvc'$",
        ),
        ("WEB_SERVER_ENGINE", None, "^WEB_SERVER_ENGINE=None: expected 'hypercorn' or 'triosvc'$"),
        ("WEB_SERVER_MAX_WORKERS", 0, "^WEB_SERVER_MAX_WORKERS=0: expected an integer >= 1$"),
        ("WEB_SERVER_MAX_WORKERS", -3, "^WEB_SERVER_MAX_WORKERS=-3: expected an integer >= 1$"),
        ("WEB_SERVER_MAX_WORKERS", 2.0, "^WEB_SERVER_MAX_WORKERS=2.0: expected an integer >= 1$"),
        ("WEB_SERVER_MAX_WORKERS", "10", "^WEB_SERVER_MAX_WORKERS='10': expected an integer"),
        (
            "WEB_SERVER_TIMEOUT",
            -1,
            "^WEB_SERVER_TIMEOUT=-1: expected a number of seconds greater than 0$",
        ),
        ("WEB_SERVER_TIMEOUT", 0, "^WEB_SERVER_TIMEOUT=0: expected a number of seconds greater"),
        ("WEB_SERVER_TIMEOUT", "abc", "^WEB_SERVER_TIMEOUT='abc': expected a number of seconds"),
        ("WEB_SERVER_TIMEOUT", "30", "^WEB_SERVER_TIMEOUT='30': expected a number of seconds"),
        ("WEB_SERVER_TIMEOUT", math.nan, "^WEB_SERVER_TIMEOUT=nan: expected a number of seconds"),
        ("WEB_SERVER_TIMEOUT", None, "^WEB_SERVER_TIMEOUT=None: expected a number of seconds"),
        (
            "WEB_SERVER_MAX_BODY_SIZE",
            -1,
            "^WEB_SERVER_MAX_BODY_SIZE=-1: expected a number of bytes",
        ),
        ("WEB_SERVER_MAX_BODY_SIZE", 1.5, "^WEB_SERVER_MAX_BODY_SIZE=1.5: expected a number of"),
        ("WEB_SERVER_CORS", "*", r"^WEB_SERVER_CORS='\*': expected a mapping of CORS options"),
        ("WEB_SERVER_CORS", ["*"], r"^WEB_SERVER_CORS=\['\*'\]: expected a mapping"),
        ("WEB_SERVER_DEBUG", "true", "^WEB_SERVER_DEBUG='true': expected true or false$"),
        ("WEB_SERVER_DEBUG", 1, "^WEB_SERVER_DEBUG=1: expected true or false$"),
        ("WEB_SERVER_DEBUG", None, "^WEB_SERVER_DEBUG=None: expected true or false$"),
        ("WEB_SERVER_CONTEXT_HEADER_PREFIX", "", "^WEB_SERVER_CONTEXT_HEADER_PREFIX='': expected"),
        ("WEB_SERVER_CONTEXT_HEADER_PREFIX", "X Ctx", "^WEB_SERVER_CONTEXT_HEADER_PREFIX='X Ctx'"),
        ("WEB_SERVER_CONTEXT_HEADER_PREFIX", "X:", "^WEB_SERVER_CONTEXT_HEADER_PREFIX='X:'"),
        ("WEB_SERVER_CONTEXT_HEADER_PREFIX", 1, "^WEB_SERVER_CONTEXT_HEADER_PREFIX=1: expected"),
        ("WEBSOCKET_PATH", "ws", "^WEBSOCKET_PATH='ws': expected a URL path starting with '/'"),
        ("WEBSOCKET_PATH", "", "^WEBSOCKET_PATH='': expected a URL path starting with '/'"),
        ("WEBSOCKET_PATH", "/w s", "^WEBSOCKET_PATH='/w s': expected a URL path"),
        ("WEBSOCKET_PATH", "/ws?x=1", r"^WEBSOCKET_PATH='/ws\?x=1': expected a URL path"),
        ("WEBSOCKET_PATH", None, "^WEBSOCKET_PATH=None: expected a URL path"),
        ("WEBSOCKET_HUB_CONFIG", None, "^WEBSOCKET_HUB_CONFIG=None: expected a mapping"),
        ("WEBSOCKET_HUB_CONFIG", [1], r"^WEBSOCKET_HUB_CONFIG=\[1\]: expected a mapping"),
        (
            "SHUTDOWN_GRACE_PERIOD",
            -1,
            "^SHUTDOWN_GRACE_PERIOD=-1: expected a number of seconds >= 0$",
        ),
        (
            "SHUTDOWN_GRACE_PERIOD",
            "10",
            "^SHUTDOWN_GRACE_PERIOD='10': expected a number of seconds",
        ),
        ("SHUTDOWN_GRACE_PERIOD", -math.inf, "^SHUTDOWN_GRACE_PERIOD=-inf: expected a number"),
        ("BROKER_URL", "amqp://guest@localhost", "^BROKER_URL='amqp://guest@localhost': expected"),
        ("BROKER_URL", "memory", "^BROKER_URL='memory': expected 'memory://' or 'redis://host"),
        ("BROKER_URL", "redis://", "^BROKER_URL='redis://': expected "),
        ("BROKER_URL", "redis://host:port", "^BROKER_URL='redis://host:port': expected "),
        ("BROKER_URL", "redis://host:70000", "^BROKER_URL='redis://host:70000': expected "),
        ("BROKER_URL", "redis://host:0", "^BROKER_URL='redis://host:0': expected "),
        ("BROKER_URL", "redis://host/db", "^BROKER_URL='redis://host/db': expected "),
        ("BROKER_URL", "redis://host/0/1", "^BROKER_URL='redis://host/0/1': expected "),
        ("BROKER_URL", "redis://host?db=1", r"^BROKER_URL='redis://host\?db=1': expected "),
        ("BROKER_URL", "redis://ho st", "^BROKER_URL='redis://ho st': expected "),
        ("BROKER_URL", "redis://[::1", r"^BROKER_URL='redis://\[::1': expected "),
        ("BROKER_URL", None, "^BROKER_URL=None: expected 'memory://'"),
        ("RPC_TIMEOUT", 0, "^RPC_TIMEOUT=0: expected a number of seconds greater than 0$"),
        ("RPC_TIMEOUT", -0.5, "^RPC_TIMEOUT=-0.5: expected a number of seconds greater than 0$"),
        ("RPC_TIMEOUT", [30], r"^RPC_TIMEOUT=\[30\]: expected a number of seconds"),
        ("LOGGING", "DEBUG", "^LOGGING='DEBUG': expected a logging.config.dictConfig mapping"),
        ("LOGGING", [], r"^LOGGING=\[\]: expected a logging.config.dictConfig mapping or null$"),
    ],
)
def test_bad_values(key: str, value: object, match: str) -> None:
    config_error({key: value}, match)


def test_broker_password_is_hidden_in_errors() -> None:
    message = config_error({"BROKER_URL": "redis://:s3cret@host:bad"}, "^BROKER_URL=")
    assert "s3cret" not in message
    assert "redis://:***@host:bad" in message


def test_long_values_are_shortened() -> None:
    message = config_error({"WEB_SERVER_TIMEOUT": "x" * 500}, "^WEB_SERVER_TIMEOUT='xxx")
    assert len(message) < 200
    assert "...: expected" in message


def test_newlines_in_values_stay_on_one_line() -> None:
    config_error({"WEBSOCKET_PATH": "/a\nb"}, r"^WEBSOCKET_PATH='/a\\nb'")


def test_first_bad_key_is_reported() -> None:
    config_error({"RPC_TIMEOUT": -1, "WEB_SERVER_TIMOUT": 1}, "^WEB_SERVER_TIMOUT: unknown")


# --- unknown keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("WEB_SERVER_TIMOUT", "WEB_SERVER_TIMEOUT"),
        ("WEB_SERVER_TIME_OUT", "WEB_SERVER_TIMEOUT"),
        ("WEB_SERVR_TIMEOUT", "WEB_SERVER_TIMEOUT"),
        ("WEB_TIMEOUT", "WEB_SERVER_TIMEOUT"),
        ("WEB_SERVER_MAX_WORKER", "WEB_SERVER_MAX_WORKERS"),
        ("WEB_SERVER_ADRESS", "WEB_SERVER_ADDRESS"),
        ("WEB_SERVER_CORS_ORIGINS", "WEB_SERVER_CORS"),
        ("WEBSOCKET_HUB", "WEBSOCKET_HUB_CONFIG"),
        ("WEBSOCKET_PATHS", "WEBSOCKET_PATH"),
        ("BROKER_URI", "BROKER_URL"),
        ("RPC_TIMEOUTS", "RPC_TIMEOUT"),
        ("SHUTDOWN_GRACE", "SHUTDOWN_GRACE_PERIOD"),
    ],
)
def test_unknown_key_suggests_the_closest(key: str, suggestion: str) -> None:
    message = config_error({key: 1}, f"^{key}: unknown triosvc key; did you mean {suggestion}\\?$")
    assert message.count("did you mean") == 1


@pytest.mark.parametrize(
    "key", ["WEB_SERVER_HOST", "WEB_X", "RPC_RETRIES", "BROKER_OPTIONS", "SHUTDOWN_SIGNAL"]
)
def test_unknown_key_without_a_close_match(key: str) -> None:
    message = config_error({key: 1}, f"^{key}: unknown triosvc key; ")
    assert "did you mean" not in message
    assert "reserved for triosvc" in message


@pytest.mark.parametrize("key", [1, None, ("WEB_SERVER_TIMEOUT",), b"RPC_TIMEOUT"])
def test_non_string_keys_are_errors(key: object) -> None:
    message = config_error({key: 5}, "=5: config keys must be strings$")  # type: ignore[dict-item]
    assert message.startswith(repr(key))


@pytest.mark.parametrize("mapping", [[("RPC_TIMEOUT", 1)], "RPC_TIMEOUT=1", 3])
def test_config_must_be_a_mapping(mapping: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^config must be a mapping") as info:
        Config(mapping)  # type: ignore[arg-type]
    one_line(info.value)


# --- application keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "DB_URL",
        "API_KEY",
        "WEBSERVER_PORT",  # no underscore after WEB: not triosvc's prefix
        "web_server_timeout",  # the prefixes are upper case
        "LOGGING_LEVEL",  # only LOGGING itself is triosvc's
        "RPCX",
        "",
    ],
)
def test_application_keys_pass_through_unchanged(key: str) -> None:
    value = {"nested": [1, 2]}
    config = Config({key: value})
    assert config[key] is value
    assert key in config
    assert len(config) == len(DEFAULTS) + 1
    assert list(config)[-1] == key


# --- WEBSOCKET_HUB_CONFIG ------------------------------------------------------------------------


def test_hub_config_is_merged_key_by_key() -> None:
    config = Config({"WEBSOCKET_HUB_CONFIG": {"max_connections": 5}})
    assert config.settings.hub == HubSettings(
        max_connections=5, heartbeat_interval=30.0, max_message_size=1048576, send_buffer=256
    )
    assert config["WEBSOCKET_HUB_CONFIG"] == {**HUB_DEFAULTS, "max_connections": 5}


def test_hub_config_every_key() -> None:
    given = {
        "max_connections": 1,
        "heartbeat_interval": 0,
        "max_message_size": 1,
        "send_buffer": 1,
    }
    config = Config({"WEBSOCKET_HUB_CONFIG": given})
    assert config.settings.hub == HubSettings(1, 0.0, 1, 1)
    assert config["WEBSOCKET_HUB_CONFIG"] == given


def test_hub_heartbeat_accepts_fractions() -> None:
    hub = Config({"WEBSOCKET_HUB_CONFIG": {"heartbeat_interval": 0.5}}).settings.hub
    assert hub.heartbeat_interval == 0.5


def test_hub_config_in_the_mapping_is_read_only() -> None:
    given = {"send_buffer": 4}
    config = Config({"WEBSOCKET_HUB_CONFIG": given})
    given["send_buffer"] = 5
    hub = config["WEBSOCKET_HUB_CONFIG"]
    assert hub["send_buffer"] == 4  # type: ignore[index]
    with pytest.raises(TypeError):
        hub["send_buffer"] = 5  # type: ignore[index]


@pytest.mark.parametrize(
    ("sub", "value", "match"),
    [
        ("max_connections", 0, "expected an integer >= 1$"),
        ("max_connections", 1.5, "expected an integer >= 1$"),
        ("max_connections", "10", "expected an integer >= 1$"),
        ("heartbeat_interval", -1, r"expected a number of seconds >= 0 \(0 disables heartbeats\)$"),
        ("heartbeat_interval", "30", "expected a number of seconds >= 0"),
        ("heartbeat_interval", math.nan, "expected a number of seconds >= 0"),
        ("max_message_size", 0, "expected a number of bytes >= 1$"),
        ("max_message_size", -1, "expected a number of bytes >= 1$"),
        ("send_buffer", 0, "expected a number of messages >= 1$"),
        ("send_buffer", None, "expected a number of messages >= 1$"),
        ("send_buffer", True, "expected a number of messages >= 1$"),
    ],
)
def test_bad_hub_values(sub: str, value: object, match: str) -> None:
    config_error(
        {"WEBSOCKET_HUB_CONFIG": {sub: value}},
        f"^WEBSOCKET_HUB_CONFIG.{sub}={value!r}: {match}",
    )


@pytest.mark.parametrize(
    ("sub", "suggestion"),
    [
        ("max_conections", "max_connections"),
        ("heartbeat", "heartbeat_interval"),
        ("buffer", "send_buffer"),
        ("max_message", "max_message_size"),
    ],
)
def test_unknown_hub_key_suggests_the_closest(sub: str, suggestion: str) -> None:
    config_error(
        {"WEBSOCKET_HUB_CONFIG": {sub: 1}},
        f"^WEBSOCKET_HUB_CONFIG.{sub}=1: unknown hub setting; did you mean {suggestion}\\?$",
    )


@pytest.mark.parametrize("sub", ["ping", 7])
def test_unknown_hub_key_lists_the_known_ones(sub: object) -> None:
    config_error(
        {"WEBSOCKET_HUB_CONFIG": {sub: 1}},
        f"^WEBSOCKET_HUB_CONFIG.{sub}=1: unknown hub setting; expected one of max_connections, "
        "heartbeat_interval, max_message_size, send_buffer$",
    )


# --- addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host", "port", "text"),
    [
        ("0.0.0.0:8000", "0.0.0.0", 8000, "0.0.0.0:8000"),
        ("127.0.0.1:0", "127.0.0.1", 0, "127.0.0.1:0"),
        ("localhost:8080", "localhost", 8080, "localhost:8080"),
        ("my-host.example.com:443", "my-host.example.com", 443, "my-host.example.com:443"),
        ("service_1:80", "service_1", 80, "service_1:80"),
        ("8000", "0.0.0.0", 8000, "0.0.0.0:8000"),
        (":8000", "0.0.0.0", 8000, "0.0.0.0:8000"),
        ("0", "0.0.0.0", 0, "0.0.0.0:0"),
        ("65535", "0.0.0.0", 65535, "0.0.0.0:65535"),
        (8000, "0.0.0.0", 8000, "0.0.0.0:8000"),
        (0, "0.0.0.0", 0, "0.0.0.0:0"),
        ("[::1]:8000", "::1", 8000, "[::1]:8000"),
        ("[::]:0", "::", 0, "[::]:0"),
        ("[2001:db8::1]:443", "2001:db8::1", 443, "[2001:db8::1]:443"),
        ("[0:0:0:0:0:0:0:1]:1", "::1", 1, "[::1]:1"),
        ("fd://3", "", 0, "fd://3"),
        ("[fe80::1%eth0]:9", "fe80::1%eth0", 9, "[fe80::1%eth0]:9"),
    ],
)
def test_address_forms(value: object, host: str, port: int, text: str) -> None:
    address = parse_address(value)
    assert address == Address(host, port, 3 if text.startswith("fd://") else None)
    assert str(address) == text
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("localhost", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("localhost:", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("host:http", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("host:80 ", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("host:-1", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("host:+80", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("host:\uff18\uff10", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("65536", "expected a port from 0 to 65535"),
        ("host:99999", "expected a port from 0 to 65535"),
        (65536, "expected a port from 0 to 65535"),
        (-1, "expected a port from 0 to 65535"),
        ("::1", r"expected an IPv6 host in brackets, as in \[::1\]:8000$"),
        ("::1:8000", r"expected an IPv6 host in brackets"),
        ("[::1]", r"expected \[ipv6\]:port$"),
        ("[::1]8000", r"expected \[ipv6\]:port$"),
        ("[localhost]:80", "expected an IPv6 address inside the brackets$"),
        ("[127.0.0.1]:80", "expected an IPv6 address inside the brackets$"),
        ("[::1]:", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("bad host:80", "expected a host name or an IP address before :port$"),
        ("-host:80", "expected a host name or an IP address before :port$"),
        ("a..b:80", "expected a host name or an IP address before :port$"),
        ("a:b:80", "expected a host name or an IP address before :port$"),
        ("http://host:80", "expected a host name or an IP address before :port$"),
        ("999.1.1.1:80", "expected a valid IPv4 address before :port$"),
        ("10.0.0:80", "expected a valid IPv4 address before :port$"),
        ("fd://", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        ("fd://-1", r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        (True, r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        (8000.0, r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        (None, r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
        (("localhost", 80), r"expected \[host:\]port, \[ipv6\]:port or fd://N$"),
    ],
)
def test_bad_addresses(value: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        parse_address(value)
    assert one_line(info.value).startswith(f"invalid address {value!r}: ")
    config_error({"WEB_SERVER_ADDRESS": value}, f"^WEB_SERVER_ADDRESS={re.escape(repr(value))}: ")


def test_address_is_a_frozen_value() -> None:
    address = Address("localhost", 80)
    assert address == parse_address("localhost:80")
    assert hash(address) == hash(Address("localhost", 80))
    with pytest.raises(AttributeError):
        address.port = 81  # type: ignore[misc]


# --- immutability, idempotence, evolve -----------------------------------------------------------


def test_config_cannot_be_changed() -> None:
    config = Config()
    with pytest.raises(TypeError):
        config["RPC_TIMEOUT"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        del config["RPC_TIMEOUT"]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        config._data = {}
    with pytest.raises(AttributeError, match="immutable"):
        del config._data
    with pytest.raises(AttributeError, match="immutable"):
        config.extra = 1
    assert config == Config()


def test_config_does_not_follow_changes_to_the_given_mapping() -> None:
    cors: dict[str, object] = {"origins": ["https://a.example"]}
    given: dict[str, object] = {"WEB_SERVER_TIMEOUT": 5, "WEB_SERVER_CORS": cors}
    config = Config(given)
    given["WEB_SERVER_TIMEOUT"] = 6
    cors["credentials"] = True
    assert config["WEB_SERVER_TIMEOUT"] == 5
    assert config["WEB_SERVER_CORS"] == {"origins": ["https://a.example"]}
    assert config.settings.cors == {"origins": ["https://a.example"]}
    with pytest.raises(TypeError):
        config.settings.cors["x"] = 1  # type: ignore[index]


def test_logging_mapping_is_copied_and_usable_by_dict_config() -> None:
    import logging.config

    logging_config = {"version": 1, "incremental": True, "loggers": {"triosvc.test": {}}}
    config = Config({"LOGGING": logging_config})
    logging_config["version"] = 2
    assert config.settings.logging is not None
    assert config.settings.logging["version"] == 1
    logging.config.dictConfig(dict(config.settings.logging))


SAMPLE: dict[str, object] = {
    "WEB_SERVER_ADDRESS": 9000,
    "WEB_SERVER_CORS": {"origins": "*"},
    "WEBSOCKET_HUB_CONFIG": {"send_buffer": 8},
    "RPC_TIMEOUT": 2.5,
    "APP_SETTING": [1, 2, 3],
}


@pytest.mark.parametrize("rebuild", [Config, lambda config: Config(dict(config))])
def test_config_of_a_config_is_the_same(rebuild: object) -> None:
    config = Config(SAMPLE)
    again = rebuild(config)  # type: ignore[operator]
    assert isinstance(again, Config)
    assert again == config
    assert dict(again) == dict(config)
    assert again.settings == config.settings
    assert again is not config


def test_mapping_protocol() -> None:
    config = Config(SAMPLE)
    assert list(config) == [*EXPECTED_DEFAULTS, "APP_SETTING"]
    assert len(config) == len(EXPECTED_DEFAULTS) + 1
    assert config.get("MISSING", "fallback") == "fallback"
    assert "RPC_TIMEOUT" in config
    not_a_string: object = 1
    assert not_a_string not in config
    with pytest.raises(KeyError):
        config["MISSING"]
    assert config == {**EXPECTED_DEFAULTS, **SAMPLE, "WEB_SERVER_ADDRESS": "0.0.0.0:9000",
                      "WEBSOCKET_HUB_CONFIG": {**HUB_DEFAULTS, "send_buffer": 8}}  # fmt: skip


def test_evolve_replaces_keys_and_validates() -> None:
    config = Config(SAMPLE)
    changed = config.evolve(RPC_TIMEOUT=9, WEB_SERVER_DEBUG=True, NEW_APP_KEY="x")
    assert changed["RPC_TIMEOUT"] == 9
    assert changed.settings.rpc_timeout == 9.0
    assert changed.settings.debug is True
    assert changed["NEW_APP_KEY"] == "x"
    assert changed["APP_SETTING"] == [1, 2, 3]
    assert changed.settings.address == config.settings.address
    assert config["RPC_TIMEOUT"] == 2.5  # the original is untouched
    assert config.evolve() == config
    with pytest.raises(ConfigurationError, match=r"^RPC_TIMEOUT=-1: "):
        config.evolve(RPC_TIMEOUT=-1)
    with pytest.raises(ConfigurationError, match="did you mean RPC_TIMEOUT"):
        config.evolve(RPC_TIMOUT=1)


def test_repr_shows_changes_but_no_secrets() -> None:
    assert repr(Config()) == "<Config defaults>"
    config = Config(
        {"RPC_TIMEOUT": 1, "BROKER_URL": "redis://:hunter2@db:6379/0", "DB_PASSWORD": "hunter2"}
    )
    text = repr(config)
    assert text == (
        "<Config BROKER_URL='redis://:***@db:6379/0'; RPC_TIMEOUT=1; application keys: DB_PASSWORD>"
    )
    assert "hunter2" not in repr(config.settings)
    assert config["BROKER_URL"] == "redis://:hunter2@db:6379/0"
    assert config.settings.broker_url == "redis://:hunter2@db:6379/0"


# --- TLS -----------------------------------------------------------------------------------------


@attrs.frozen
class TLSFiles:
    certfile: Path
    keyfile: Path
    other_key: Path  # a valid key of another certificate
    encrypted_key: Path  # the right key, under a password


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    trustme = pytest.importorskip("trustme")
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    issued, other = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    directory = tmp_path_factory.mktemp("tls")
    files = TLSFiles(
        *(directory / name for name in ("cert.pem", "key.pem", "other.pem", "enc.pem"))
    )
    files.certfile.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    files.keyfile.write_bytes(issued.private_key_pem.bytes())
    files.other_key.write_bytes(other.private_key_pem.bytes())
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    files.encrypted_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return files


def test_tls_files_are_read(tls_files: TLSFiles) -> None:
    config = Config(
        {"WEB_SERVER_CERTFILE": tls_files.certfile, "WEB_SERVER_KEYFILE": str(tls_files.keyfile)}
    )
    assert config.settings.tls
    assert config.settings.certfile == str(tls_files.certfile)
    assert config.settings.keyfile == str(tls_files.keyfile)
    assert config["WEB_SERVER_CERTFILE"] == str(tls_files.certfile)  # a Path becomes a str


@pytest.mark.parametrize(("given", "missing"), [("CERTFILE", "KEYFILE"), ("KEYFILE", "CERTFILE")])
def test_tls_needs_both_files(tls_files: TLSFiles, given: str, missing: str) -> None:
    path = str(tls_files.certfile if given == "CERTFILE" else tls_files.keyfile)
    config_error(
        {f"WEB_SERVER_{given}": path},
        f"^WEB_SERVER_{given}='.*': TLS needs WEB_SERVER_{missing} as well \\(both or neither\\)$",
    )


def test_tls_file_not_found(tls_files: TLSFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    config_error(
        {"WEB_SERVER_CERTFILE": str(missing), "WEB_SERVER_KEYFILE": str(tls_files.keyfile)},
        "^WEB_SERVER_CERTFILE='.*nope.pem': file not found$",
    )
    config_error(
        {"WEB_SERVER_CERTFILE": str(tls_files.certfile), "WEB_SERVER_KEYFILE": str(missing)},
        "^WEB_SERVER_KEYFILE='.*nope.pem': file not found$",
    )


def test_tls_file_that_is_a_directory(tls_files: TLSFiles, tmp_path: Path) -> None:
    config_error(
        {"WEB_SERVER_CERTFILE": str(tmp_path), "WEB_SERVER_KEYFILE": str(tls_files.keyfile)},
        "^WEB_SERVER_CERTFILE='.*': cannot read the file: Is a directory$",
    )


@pytest.mark.parametrize("value", ["", 42, True, ["cert.pem"]])
def test_tls_path_of_the_wrong_type(tls_files: TLSFiles, value: object) -> None:
    config_error(
        {"WEB_SERVER_CERTFILE": value, "WEB_SERVER_KEYFILE": str(tls_files.keyfile)},
        "^WEB_SERVER_CERTFILE=.*: expected the path of a PEM file, or null$",
    )


@pytest.mark.parametrize(
    ("certfile", "keyfile", "match"),
    [
        ("keyfile", "keyfile", "^WEB_SERVER_CERTFILE='.*key.pem': expected a PEM certificate"),
        ("certfile", "certfile", "^WEB_SERVER_KEYFILE='.*cert.pem': expected a PEM private key$"),
        (
            "certfile",
            "other_key",
            "^WEB_SERVER_KEYFILE='.*other.pem': the key does not match the certificate in"
            " WEB_SERVER_CERTFILE$",
        ),
        (
            "certfile",
            "encrypted_key",
            "^WEB_SERVER_KEYFILE='.*enc.pem': the key is encrypted; expected an unencrypted PEM",
        ),
    ],
)
def test_tls_files_that_do_not_load(
    tls_files: TLSFiles, certfile: str, keyfile: str, match: str
) -> None:
    config_error(
        {
            "WEB_SERVER_CERTFILE": str(getattr(tls_files, certfile)),
            "WEB_SERVER_KEYFILE": str(getattr(tls_files, keyfile)),
        },
        match,
    )


# --- YAML files ----------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_value(tmp_path: Path, yaml_value: str, environ: dict[str, str]) -> object:
    return load_config_file(write(tmp_path, f"KEY: {yaml_value}\n"), environ)["KEY"]


@pytest.mark.parametrize(
    ("yaml_value", "environ", "expected"),
    [
        # plain scalars are typed again after substitution
        ("${T}", {"T": "30"}, 30),
        ("${T:30}", {}, 30),
        ("${T:30}", {"T": "5"}, 5),
        ("${T:1.5}", {}, 1.5),
        ("${T:0x10}", {}, 16),
        ("${DEBUG:false}", {}, False),
        ("${DEBUG}", {"DEBUG": "true"}, True),
        ("${X:null}", {}, None),
        ("${X:~}", {}, None),
        ("${X:.inf}", {}, math.inf),
        ("${D:2024-01-02}", {}, datetime.date(2024, 1, 2)),
        ("${NAME:world}", {}, "world"),
        ("${X:}", {}, ""),
        ("${X}", {"X": ""}, ""),  # set but empty: the empty value, not the default
        ("${X:5}", {"X": ""}, ""),
        ("127.0.0.1:${PORT}", {"PORT": "8000"}, "127.0.0.1:8000"),
        ("${HOST:localhost}:${PORT:80}", {"PORT": "81"}, "localhost:81"),
        ("${A}${B}", {"A": "1", "B": "2"}, 12),
        ("${A:1}.${B:5}", {}, 1.5),
        ("a $ b {c} ${ not a variable }", {}, "a $ b {c} ${ not a variable }"),
        ("${lower_case_1}", {"lower_case_1": "ok"}, "ok"),
        ("${X:a:b}", {}, "a:b"),
        # the substituted text gives one scalar, never YAML structure
        ("${V}", {"V": "[1, 2]"}, "[1, 2]"),
        ("${V}", {"V": "{a: 1}"}, "{a: 1}"),
        ("${V}", {"V": "a: b"}, "a: b"),
        ("${V}", {"V": "- x"}, "- x"),
        ("${V}", {"V": "*anchor"}, "*anchor"),
        (
            "${V}",
            {"V": "!!python/object/apply:os.system ['true']"},
            "!!python/object/apply:os.system ['true']",
        ),
        ("${V}", {"V": "<<"}, "<<"),
        ("${V}", {"V": "="}, "="),
        ("${V}", {"V": "x # comment"}, "x # comment"),
        ("${V}", {"V": "line1\nline2"}, "line1\nline2"),
        ("${V}", {"V": "${W}"}, "${W}"),  # no second round of substitution
        # quoted scalars stay strings
        ("'${T:30}'", {}, "30"),
        ('"${T:30}"', {}, "30"),
        ('"${DEBUG:false}"', {}, "false"),
        ("'127.0.0.1:${PORT}'", {"PORT": "9"}, "127.0.0.1:9"),
        ("!!str ${T:30}", {}, "30"),
        ("! ${T:30}", {}, "30"),
        ("|\n  ${T:30}", {}, "30\n"),
        # values without variables are untouched
        ("30", {}, 30),
        ("'30'", {}, "30"),
    ],
)
def test_substitution(
    tmp_path: Path, yaml_value: str, environ: dict[str, str], expected: object
) -> None:
    value = load_value(tmp_path, yaml_value, environ)
    assert value == expected
    assert type(value) is type(expected)


def test_substitution_in_nested_values_keys_and_aliases(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "WEBSOCKET_HUB_CONFIG:\n"
        "  max_connections: ${MAXC:5}\n"
        "  heartbeat_interval: &beat ${BEAT:2}\n"
        "LIST:\n  - ${A:1}\n  - '${A:1}'\n  - *beat\n"
        "FLOW: ['${A:1}', '${B:x}']\n"
        "${KEY_NAME:APP}: value\n",
    )
    data = load_config_file(path, {"BEAT": "3"})
    assert data == {
        "WEBSOCKET_HUB_CONFIG": {"max_connections": 5, "heartbeat_interval": 3},
        "LIST": [1, "1", 3],
        "FLOW": ["1", "x"],
        "APP": "value",
    }


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOSVC_TEST_PORT", "4321")
    path = write(tmp_path, "WEB_SERVER_ADDRESS: 127.0.0.1:${TRIOSVC_TEST_PORT}\n")
    assert load_config_file(path) == {"WEB_SERVER_ADDRESS": "127.0.0.1:4321"}
    assert load_config_file(str(path)) == {"WEB_SERVER_ADDRESS": "127.0.0.1:4321"}


def test_a_full_file_gives_a_valid_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
# the service's config
WEB_SERVER_ADDRESS: "127.0.0.1:${PORT:0}"
WEB_SERVER_TIMEOUT: ${TIMEOUT:2.5}
WEB_SERVER_DEBUG: ${DEBUG:false}
WEB_SERVER_CORS:
  origins: ["https://app.example"]
  credentials: true
WEBSOCKET_HUB_CONFIG:
  max_connections: ${MAX_CONNECTIONS:50}
BROKER_URL: redis://${REDIS_HOST:localhost}:6379/0
LOGGING:
  version: 1
DATABASE_URL: postgresql://${DB_HOST:db}/app
""",
    )
    config = Config(load_config_file(path, {"DEBUG": "yes", "REDIS_HOST": "cache"}))
    settings = config.settings
    assert settings.address == Address("127.0.0.1", 0)
    assert settings.timeout == 2.5
    assert settings.debug is True
    assert settings.cors == {"origins": ["https://app.example"], "credentials": True}
    assert settings.hub.max_connections == 50
    assert settings.hub.send_buffer == 256
    assert settings.broker_url == "redis://cache:6379/0"
    assert settings.logging == {"version": 1}
    assert config["DATABASE_URL"] == "postgresql://db/app"


@pytest.mark.parametrize(
    ("text", "name", "line"),
    [
        ("WEB_SERVER_ADDRESS: 127.0.0.1:${PORT}\n", "PORT", 1),
        ("A: 1\nB: '${SECRET}'\n", "SECRET", 2),
        ("A:\n  - x\n  - ${ITEM} and ${OTHER:ok}\n", "ITEM", 3),
        ("A: ${SET} ${UNSET}\n", "UNSET", 1),
    ],
)
def test_unset_variable_is_an_error(tmp_path: Path, text: str, name: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        load_config_file(path, {"SET": "1"})
    assert one_line(info.value) == (
        f"{path}, line {line}: environment variable {name} is not set"
        f" (give a default with ${{{name}:default}})"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("A: [1, 2\nB: 3\n", "line 2, column 2"),
        ("A: 1\n  B: 2\n", "line 2, column 4"),
        ("A: 'unterminated\n", "line 2, column 1"),
        ("A: 1\n\tB: 2\n", "line 2, column 1"),
        ("A: *nowhere\n", "line 1, column 4"),
        ("A: 1\n---\nB: 2\n", "line 2, column 1"),
        ("A: !!python/object/apply:os.system ['true']\n", "line 1, column 4"),
    ],
)
def test_not_yaml_is_an_error(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=f"not valid YAML at {where}: ") as info:
        load_config_file(path, {})
    assert one_line(info.value).startswith(f"{path}: not valid YAML at ")


def test_undecodable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"A: \xff\xfe\x00\n")
    with pytest.raises(ConfigurationError, match="not valid YAML") as info:
        load_config_file(path, {})
    assert one_line(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int"), ("'${X:1}'\n", "str")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        load_config_file(path, {})
    assert one_line(info.value) == (
        f"{path}: expected a mapping of KEY: value at the top level, got {kind}"
    )


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_file_is_an_empty_mapping(tmp_path: Path, text: str) -> None:
    assert load_config_file(write(tmp_path, text), {}) == {}


@pytest.mark.parametrize(("text", "key"), [("1: a\n", "1"), ("null: a\n", "None")])
def test_file_keys_must_be_strings(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        load_config_file(path, {})
    assert one_line(info.value) == f"{path}: config keys must be strings, got {key}"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigurationError) as info:
        load_config_file(path)
    assert one_line(info.value) == f"{path}: config file not found"


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_config_file(tmp_path)
    assert one_line(info.value).startswith(f"{tmp_path}: cannot read config file: ")


def test_file_is_not_validated_by_loading(tmp_path: Path) -> None:
    path = write(tmp_path, "RPC_TIMEOUT: -1\n")
    data = load_config_file(path, {})
    assert data == {"RPC_TIMEOUT": -1}
    with pytest.raises(ConfigurationError, match=r"^RPC_TIMEOUT=-1: "):
        Config(data)


# --- --define ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("WEB_SERVER_TIMEOUT=5", ("WEB_SERVER_TIMEOUT", 5)),
        ("RPC_TIMEOUT=0.5", ("RPC_TIMEOUT", 0.5)),
        ("WEB_SERVER_DEBUG=true", ("WEB_SERVER_DEBUG", True)),
        ("WEB_SERVER_CORS=null", ("WEB_SERVER_CORS", None)),
        ('WEB_SERVER_CORS={origins: "*"}', ("WEB_SERVER_CORS", {"origins": "*"})),
        ("WEBSOCKET_HUB_CONFIG={send_buffer: 4}", ("WEBSOCKET_HUB_CONFIG", {"send_buffer": 4})),
        ("WEB_SERVER_ADDRESS=127.0.0.1:8000", ("WEB_SERVER_ADDRESS", "127.0.0.1:8000")),
        ("BROKER_URL=redis://h:6379/0", ("BROKER_URL", "redis://h:6379/0")),
        ("LIST=[1, two]", ("LIST", [1, "two"])),
        ("NAME=", ("NAME", "")),
        ("NAME=  ", ("NAME", "")),
        ("NAME='5'", ("NAME", "5")),
        ("EQUATION=a=b", ("EQUATION", "a=b")),
        (" KEY =1", ("KEY", 1)),
        ("NAME=${HOME}", ("NAME", "${HOME}")),  # the shell substitutes, not triosvc
    ],
)
def test_parse_define(text: str, expected: tuple[str, object]) -> None:
    assert parse_define(text) == expected


@pytest.mark.parametrize("text", ["x", "", "=5", " =5", "WEB_SERVER_TIMEOUT"])
def test_parse_define_bad_form(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_define(text)
    assert one_line(info.value) == f"--define expects KEY=VALUE, got {text!r}"


@pytest.mark.parametrize("value", ["[1, 2", "{a: 1", "'open", "a: b: c", "!!python/name:os.system"])
def test_parse_define_value_not_yaml(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^--define KEY=.*: not valid YAML") as info:
        parse_define(f"KEY={value}")
    one_line(info.value)


def test_defines_override_a_file(tmp_path: Path) -> None:
    data = load_config_file(write(tmp_path, "RPC_TIMEOUT: 3\nAPP: 1\n"), {})
    data.update(dict([parse_define("RPC_TIMEOUT=7"), parse_define("WEB_SERVER_DEBUG=yes")]))
    settings = Config(data).settings
    assert settings.rpc_timeout == 7.0
    assert settings.debug is True


def test_an_inherited_listening_socket_is_served(tmp_path: Path) -> None:
    with bind_socket(parse_address("127.0.0.1:0")) as listening:
        inherited = bind_socket(parse_address(f"fd://{listening.fileno()}"))
        assert inherited.fileno() == listening.fileno()
        assert inherited.getsockname() == listening.getsockname()
        inherited.detach()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda tmp_path: socket.socket(), "the socket is not listening$"),
        (lambda tmp_path: socket.socket(socket.AF_UNIX), "expected a TCP socket, got AF_UNIX$"),
        (lambda tmp_path: (tmp_path / "f").open("w"), "not an open socket: "),
    ],
    ids=["not-listening", "unix", "a-file"],
)
def test_an_inherited_descriptor_that_cannot_be_served(
    tmp_path: Path, make: Callable[[Path], Any], match: str
) -> None:
    with make(tmp_path) as thing:
        fd = thing.fileno()
        with pytest.raises(ConfigurationError, match=f"^WEB_SERVER_ADDRESS=fd://{fd}: {match}"):
            bind_socket(parse_address(f"fd://{fd}"))
    with pytest.raises(ConfigurationError, match=r"not an open socket: Bad file descriptor$"):
        bind_socket(parse_address(f"fd://{fd}"))
