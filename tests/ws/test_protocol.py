"""The sans-IO WebSocket RPC protocol (SPEC §5.1): exact frames, every rule, and fuzzing.

Pure functions only: no nursery, no sockets. Frames are compared by parsing them and comparing
values *with their types* (``exact``), since ``1 == 1.0 == True`` would hide a wrong echo.
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
import types
from typing import TYPE_CHECKING, NoReturn

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triosvc.exceptions import IncorrectSignature, MalformedRequest, MethodNotFound
from triosvc.ws.protocol import (
    BadCall,
    Call,
    Event,
    Failure,
    Result,
    UnencodableValue,
    Unreadable,
    decode_call,
    decode_message,
    encode_call,
    encode_connected,
    encode_error,
    encode_event,
    encode_result,
    error_fields,
)

if TYPE_CHECKING:
    from collections.abc import Callable

# Modest, so the file runs in seconds; no example database to keep. Generating nested JSON
# costs more than running the code under test, so those properties get fewer examples.
FUZZ = settings(max_examples=300, deadline=None, database=None)
FUZZ_JSON = settings(max_examples=100, deadline=None, database=None)

EXPECTED_CALL = 'expected a JSON object {"method": ..., "data": {...}, "correlation_id": ...}'


def as_sent(text: str) -> str:
    """``text`` as the peer decodes it: a surrogate pair becomes the one character it encodes.

    JSON reads the escapes ``\\ud800\\udc00`` as U+10000, so a Python string holding a pair of
    surrogate code points cannot come back as it was (it cannot be UTF-8 either); lone
    surrogates do come back as they were.
    """
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def exact(value: object) -> object:
    """``value`` with every scalar tagged by its type, for comparisons that ``==`` blurs.

    Strings are compared as sent (:func:`as_sent`).
    """
    if isinstance(value, dict):
        return ("dict", [(exact(k), exact(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [exact(item) for item in value])
    if isinstance(value, str):
        return ("str", as_sent(value))
    return (type(value).__name__, repr(value))


def parse(frame: str) -> object:
    """Parse an encoder's output as strict JSON, checking it can be sent as UTF-8."""
    frame.encode("utf-8")

    def no_constants(name: str) -> object:
        raise AssertionError(f"non-standard JSON constant {name} in {frame!r}")

    return json.loads(frame, parse_constant=no_constants)


# Correlation ids of every JSON type, each echoed exactly.
CORRELATION_IDS = [
    None,
    0,
    -1,
    "",
    "abc-123",
    1.5,
    -0.0,
    1e300,
    10**40,
    -(10**40),
    True,
    False,
    [],
    {},
    [1, "a", None, 2.5],
    {"nested": {"list": [1, {"deep": [True, None]}], "empty": {}}},
    "日本語 ✓ 🎉 é",
    "\ud800 lone surrogate",
    'quote " backslash \\ newline \n nul \x00',
]
ID_NAMES = [repr(cid)[:30] for cid in CORRELATION_IDS]


# JSON values for hypothesis: any finite float, any int, and strings drawn from all of Unicode
# (which hypothesis draws without surrogates) or from characters that are tricky to encode:
# lone surrogates and pairs, escapes, NUL, U+2028. CHARACTERS draws one character of either.
TRICKY = 'a\u00e9\ud800\udbff\udc00\udfff\U0001f389"\\\n\x00\u2028'
CHARACTERS = st.characters() | st.sampled_from(TRICKY)
TEXT = st.text(max_size=12) | st.text(st.sampled_from(TRICKY), max_size=8)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON_VALUES, max_size=4)


# decode_call: the rules ----------------------------------------------------------------------


@pytest.mark.parametrize("frame", [b"", b'{"method": "echo"}', bytearray(b"{}"), b"\xff\xfe"])
def test_binary_frame_is_malformed(frame: bytes) -> None:
    assert decode_call(frame) == BadCall(
        "MalformedRequest", "binary frames are not supported: send JSON text", None
    )


def test_exception_names_come_from_the_exception_classes() -> None:
    assert decode_call(b"").exc_type == MalformedRequest.__name__  # type: ignore[union-attr]
    bad = decode_call('{"method": "m", "data": 1}')
    assert isinstance(bad, BadCall)
    assert bad.exc_type == IncorrectSignature.__name__


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "   ",
        "nope",
        "{",
        '{"method": "m",}',
        "{'method': 'm'}",
        '{"method": "m"} trailing',
        '\ufeff{"method": "m"}',
        "\ud800",
        '{"method": "m", "data": {"x": NaN}}',
        '{"method": "m", "data": {"x": Infinity}}',
        '{"method": "m", "correlation_id": -Infinity}',
        "NaN",
        '{"method": "m", "data": {"x": 1e999}}',
        '{"method": "m", "data": {"x": -1e400}}',
        '{"method": "m", "correlation_id": ' + "9" * 5000 + "}",
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
    ],
    ids=lambda frame: repr(frame)[:30],
)
def test_text_that_is_not_strict_json_is_malformed_without_correlation_id(frame: str) -> None:
    bad = decode_call(frame)
    assert isinstance(bad, BadCall)
    assert bad.exc_type == "MalformedRequest"
    assert bad.correlation_id is None
    assert bad.value.startswith("the frame is not JSON (")
    assert bad.value.endswith(EXPECTED_CALL)
    assert len(bad.value) < 300  # says what is wrong without echoing the frame


def test_not_json_messages_say_why() -> None:
    nan = decode_call('{"method": "m", "data": {"x": NaN}}')
    huge_float = decode_call('{"method": "m", "data": {"x": 1e999}}')
    huge_int = decode_call("[" + "9" * 5000 + "]")
    deep = decode_call("[" * 100_000)
    assert "NaN is not JSON" in nan.value  # type: ignore[union-attr]
    assert "1e999 is beyond a float's range" in huge_float.value  # type: ignore[union-attr]
    assert f"more than {sys.get_int_max_str_digits()} digits" in huge_int.value  # type: ignore[union-attr]
    assert "set_int_max_str_digits" not in huge_int.value  # type: ignore[union-attr]
    assert "nested too deeply" in deep.value  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("[]", "array"),
        ('[{"method": "m"}]', "array"),
        ('"method"', "string"),
        ("1", "number"),
        ("1.5", "number"),
        ("true", "boolean"),
        ("null", "null"),
    ],
)
def test_json_that_is_not_an_object_is_malformed(frame: str, kind: str) -> None:
    assert decode_call(frame) == BadCall(
        "MalformedRequest", f"{EXPECTED_CALL}, got a JSON {kind}", None
    )


@pytest.mark.parametrize(
    ("method", "problem"),
    [
        (None, 'the call has no "method"'),
        (1, '"method" must be a string, got a JSON number'),
        (1.5, '"method" must be a string, got a JSON number'),
        (True, '"method" must be a string, got a JSON boolean'),
        (["m"], '"method" must be a string, got a JSON array'),
        ({"name": "m"}, '"method" must be a string, got a JSON object'),
    ],
)
@pytest.mark.parametrize("correlation_id", CORRELATION_IDS, ids=ID_NAMES)
def test_object_without_string_method_is_malformed_with_correlation_id(
    method: object, problem: str, correlation_id: object
) -> None:
    frame = json.dumps({"method": method, "data": {}, "correlation_id": correlation_id})
    bad = decode_call(frame)
    assert bad == BadCall("MalformedRequest", f"{problem}: {EXPECTED_CALL}", correlation_id)
    assert exact(bad.correlation_id) == exact(correlation_id)


def test_missing_method_and_missing_correlation_id() -> None:
    assert decode_call('{"data": {}, "correlation_id": 7}') == BadCall(
        "MalformedRequest", f'the call has no "method": {EXPECTED_CALL}', 7
    )
    assert decode_call("{}") == BadCall(
        "MalformedRequest", f'the call has no "method": {EXPECTED_CALL}', None
    )


@pytest.mark.parametrize("frame", ['{"method": "m"}', '{"method": "m", "data": null}'])
def test_missing_or_null_data_means_no_arguments(frame: str) -> None:
    call = decode_call(frame)
    assert call == Call("m", {}, None)


@pytest.mark.parametrize(
    ("data", "kind"),
    [([1, 2], "array"), ("x=1", "string"), (0, "number"), (2.5, "number"), (False, "boolean")],
)
@pytest.mark.parametrize("correlation_id", CORRELATION_IDS, ids=ID_NAMES)
def test_data_that_is_not_an_object_is_incorrect_signature(
    data: object, kind: str, correlation_id: object
) -> None:
    frame = json.dumps({"method": "m", "data": data, "correlation_id": correlation_id})
    bad = decode_call(frame)
    assert bad == BadCall(
        "IncorrectSignature",
        f'"data" must be a JSON object of keyword arguments, or null for none; got a JSON {kind}',
        correlation_id,
    )
    assert exact(bad.correlation_id) == exact(correlation_id)


@pytest.mark.parametrize("correlation_id", CORRELATION_IDS, ids=ID_NAMES)
def test_call_echoes_correlation_id_exactly(correlation_id: object) -> None:
    frame = json.dumps({"method": "add", "data": {"a": 1}, "correlation_id": correlation_id})
    call = decode_call(frame)
    assert call == Call("add", {"a": 1}, correlation_id)
    assert exact(call.correlation_id) == exact(correlation_id)


def test_call_decodes_method_and_data_and_ignores_other_keys() -> None:
    frame = (
        '{"method": "greet", "data": {"name": "é", "n": 1, "x": 1.0, "l": [null]},'
        ' "correlation_id": "c1", "extra": [1, 2]}'
    )
    call = decode_call(frame)
    assert call == Call("greet", {"name": "é", "n": 1, "x": 1.0, "l": [None]}, "c1")
    assert isinstance(call, Call)
    assert exact(call.data) == exact({"name": "é", "n": 1, "x": 1.0, "l": [None]})


def test_any_string_is_a_method_name_for_the_caller_to_look_up() -> None:
    # An empty or odd name is still a Call: the connection answers MethodNotFound.
    assert decode_call('{"method": ""}') == Call("", {}, None)
    assert decode_call('{"method": "\\ud800"}') == Call("\ud800", {}, None)


def test_duplicate_keys_take_the_last_value_as_json_does() -> None:
    assert decode_call('{"method": "a", "method": "b"}') == Call("b", {}, None)


# Encoders: exact frames ---------------------------------------------------------------------


def test_encode_connected() -> None:
    frame = encode_connected("sock-1")
    assert frame == '{"type":"event","event":"connected","data":{"socket_id":"sock-1"}}'
    assert parse(frame) == {"type": "event", "event": "connected", "data": {"socket_id": "sock-1"}}


def test_encode_result_exact_text_and_key_order() -> None:
    frame = encode_result(7, {"a": [1, 2.5, None, True]})
    assert frame == (
        '{"type":"result","success":true,"data":{"a":[1,2.5,null,true]},"correlation_id":7}'
    )
    assert list(parse(frame)) == ["type", "success", "data", "correlation_id"]  # type: ignore[call-overload]


@pytest.mark.parametrize("correlation_id", CORRELATION_IDS, ids=ID_NAMES)
@pytest.mark.parametrize("data", [None, 0, "", [], {}, "é", {"k": [1, {"x": None}]}, (1, 2)])
def test_encode_result(correlation_id: object, data: object) -> None:
    message = parse(encode_result(correlation_id, data))
    expected_data = list(data) if isinstance(data, tuple) else data
    assert exact(message) == exact(
        {"type": "result", "success": True, "data": expected_data, "correlation_id": correlation_id}
    )


def test_encode_error_exact_text_and_key_order() -> None:
    frame = encode_error("c", "MethodNotFound", "no method 'x'", ["x", 1])
    assert frame == (
        '{"type":"result","success":false,"error":{"exc_type":"MethodNotFound",'
        '"value":"no method \'x\'","exc_args":["x",1]},"correlation_id":"c"}'
    )
    message = parse(frame)
    assert isinstance(message, dict)
    assert list(message) == ["type", "success", "error", "correlation_id"]
    assert list(message["error"]) == ["exc_type", "value", "exc_args"]


@pytest.mark.parametrize("correlation_id", CORRELATION_IDS, ids=ID_NAMES)
def test_encode_error(correlation_id: object) -> None:
    message = parse(encode_error(correlation_id, "ValueError", "bad", ("bad", 2, None)))
    assert exact(message) == exact(
        {
            "type": "result",
            "success": False,
            "error": {"exc_type": "ValueError", "value": "bad", "exc_args": ["bad", 2, None]},
            "correlation_id": correlation_id,
        }
    )


def test_encode_error_exc_args_default_to_empty() -> None:
    message = parse(encode_error(None, "Timeout", ""))
    assert message == {
        "type": "result",
        "success": False,
        "error": {"exc_type": "Timeout", "value": "", "exc_args": []},
        "correlation_id": None,
    }


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_encode_error_replaces_unencodable_exc_args_by_repr() -> None:
    circular: list[object] = []
    circular.append(circular)
    when = datetime.date(2024, 1, 2)
    args = [1, when, math.nan, {1, 2}.__class__, circular, BrokenRepr(), "ok", {"k": math.inf}]
    message = parse(encode_error(5, "ValueError", "v", args))
    assert isinstance(message, dict)
    assert message["correlation_id"] == 5
    assert message["error"]["exc_args"] == [
        1,
        "datetime.date(2024, 1, 2)",
        "nan",
        "<class 'set'>",
        "[[...]]",
        "<BrokenRepr: repr() failed>",
        "ok",
        "{'k': inf}",
    ]


def test_encode_error_sends_null_for_a_correlation_id_it_cannot_encode() -> None:
    message = parse(encode_error(object(), "InternalServerError", "", ()))
    assert isinstance(message, dict)
    assert message["correlation_id"] is None
    assert message["error"]["exc_type"] == "InternalServerError"


def test_encode_error_survives_nesting_beyond_the_recursion_limit() -> None:
    deep: list[object] = []
    for _ in range(10_000):  # beyond the recursion limit
        deep = [deep]
    message = parse(encode_error(deep, "X", "v", [deep]))
    assert isinstance(message, dict)
    assert message["correlation_id"] is None
    assert message["error"]["exc_args"] == ["<list: repr() failed>"]


def test_encode_event_exact_text_and_key_order() -> None:
    frame = encode_event("chat", {"from": "ann", "text": "hi é"})
    assert frame == '{"type":"event","event":"chat","data":{"from":"ann","text":"hi é"}}'
    assert list(parse(frame)) == ["type", "event", "data"]  # type: ignore[call-overload]


def test_encode_call_exact_text_and_key_order() -> None:
    frame = encode_call("add", {"a": 1, "b": 2}, 3)
    assert frame == '{"method":"add","data":{"a":1,"b":2},"correlation_id":3}'
    assert list(parse(frame)) == ["method", "data", "correlation_id"]  # type: ignore[call-overload]


def test_encode_call_without_data_and_with_any_mapping() -> None:
    assert encode_call("ping", None, None) == '{"method":"ping","data":{},"correlation_id":null}'
    proxy = types.MappingProxyType({"x": 1})
    assert encode_call("f", proxy, "c") == '{"method":"f","data":{"x":1},"correlation_id":"c"}'


def test_encoders_write_non_ascii_as_is_and_lone_surrogates_escaped() -> None:
    assert encode_event("e", "é 日本 🎉") == '{"type":"event","event":"e","data":"é 日本 🎉"}'
    frame = encode_event("e", "é \ud800")
    assert frame == '{"type":"event","event":"e","data":"\\u00e9 \\ud800"}'
    frame.encode("utf-8")
    assert decode_message(frame) == Event("e", "é \ud800")
    result = encode_result("\udfff", None)
    result.encode("utf-8")
    assert decode_message(result) == Result("\udfff", None)


circular_list: list[object] = []
circular_list.append(circular_list)
circular_dict: dict[str, object] = {}
circular_dict["self"] = circular_dict

UNENCODABLE = [
    (math.nan, "data is nan, and JSON has no NaN or Infinity"),
    ({"x": [1, math.inf]}, "data['x'][1] is inf, and JSON has no NaN or Infinity"),
    (-math.inf, "data is -inf, and JSON has no NaN or Infinity"),
    ({"when": datetime.date(2024, 1, 2)}, "data['when'] has type datetime.date"),
    ([{1, 2}], "data[0] has type set"),
    ({"raw": b"x"}, "data['raw'] has type bytes"),
    ({"o": object()}, "data['o'] has type object"),
    ({(1, 2): "v"}, "data has a key of type tuple; JSON object keys are strings"),
    ({math.nan: "v"}, "data has a key that is nan, and JSON has no NaN or Infinity"),
    ([10**5000], "data[0] is an int with more digits than Python writes"),
    (circular_list, "data[0] is a circular reference to a container it is in"),
    ({"a": circular_dict}, "data['a']['self'] is a circular reference to a container it is in"),
]


def _encode_with_data(encoder: str, data: object) -> str:
    if encoder == "result":
        return encode_result(1, data)
    if encoder == "event":
        return encode_event("e", data)
    return encode_call("m", {"data": data}, 1)


@pytest.mark.parametrize("encoder", ["result", "event", "call"])
@pytest.mark.parametrize(("data", "problem"), UNENCODABLE, ids=[p[:25] for _, p in UNENCODABLE])
def test_unencodable_data_raises_unencodable_value_naming_type_and_place(
    encoder: str, data: object, problem: str
) -> None:
    if encoder == "call":  # the call's data wraps the value one level down
        problem = problem.replace("data", "data['data']", 1)
    with pytest.raises(UnencodableValue) as info:
        _encode_with_data(encoder, data)
    assert isinstance(info.value, TypeError)
    assert problem in str(info.value)
    assert "send only dict (with str keys), list" in str(info.value)
    assert info.value.__cause__ is not None


def test_unencodable_messages_say_which_frame() -> None:
    with pytest.raises(UnencodableValue, match=r"^the result cannot be sent as JSON: "):
        encode_result(1, object())
    with pytest.raises(UnencodableValue, match=r"^the event's data cannot be sent as JSON: "):
        encode_event("e", object())
    with pytest.raises(UnencodableValue, match=r"^the call cannot be sent as JSON: "):
        encode_call("m", {"x": object()}, 1)


def test_unencodable_correlation_id_is_named() -> None:
    with pytest.raises(UnencodableValue, match=r"correlation_id has type object"):
        encode_result(object(), 1)
    with pytest.raises(UnencodableValue, match=r"correlation_id is nan"):
        encode_call("m", None, math.nan)


def test_too_deep_a_value_raises_unencodable_value() -> None:
    deep: list[object] = []
    for _ in range(10_000):  # beyond the recursion limit
        deep = [deep]
    with pytest.raises(UnencodableValue, match="nested too deeply"):
        encode_result(1, deep)
    with pytest.raises(UnencodableValue, match="nested too deeply"):
        encode_event("e", deep)


class BrokenDict(dict[str, object]):
    def items(self) -> NoReturn:
        raise KeyError("broken")


def test_a_container_that_breaks_while_encoded_raises_unencodable_value() -> None:
    with pytest.raises(UnencodableValue, match="KeyError"):
        encode_result(1, BrokenDict(a=1))
    message = parse(encode_error(1, "E", "v", [BrokenDict(a=1)]))
    assert message["error"]["exc_args"] == ["{'a': 1}"]  # type: ignore[index]


def test_long_paths_are_shortened() -> None:
    value: dict[str, object] = {"x": object()}
    for i in range(100):
        value = {f"key{i}": value}
    with pytest.raises(UnencodableValue) as info:
        encode_event("e", value)
    message = str(info.value)
    assert "data['key99']['key98']" in message
    assert "..." in message
    assert "['key0']['x'] has type object" in message
    assert len(message) < 400


# error_fields -------------------------------------------------------------------------------


class AppError(Exception):
    pass


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


@pytest.mark.parametrize(
    ("exc", "fields"),
    [
        (ValueError("boom", 3), ("ValueError", "('boom', 3)", ("boom", 3))),
        (ValueError("boom"), ("ValueError", "boom", ("boom",))),
        (KeyError("k"), ("KeyError", "'k'", ("k",))),
        (AppError(), ("AppError", "", ())),
        (MethodNotFound("nope"), ("MethodNotFound", "nope", ("nope",))),
        (BrokenStr("x"), ("BrokenStr", "<BrokenStr: str() failed>", ("x",))),
    ],
)
def test_error_fields(exc: BaseException, fields: tuple[str, str, tuple[object, ...]]) -> None:
    assert error_fields(exc) == fields


def test_error_fields_feed_encode_error() -> None:
    frame = encode_error("c", *error_fields(ValueError("bad", {"k": [1]})))
    assert decode_message(frame) == Failure(
        "c", "ValueError", "('bad', {'k': [1]})", ("bad", {"k": [1]})
    )


# decode_message ------------------------------------------------------------------------------


@pytest.mark.parametrize("correlation_id", CORRELATION_IDS, ids=ID_NAMES)
def test_decode_result_and_failure_echo_correlation_id(correlation_id: object) -> None:
    result = decode_message(encode_result(correlation_id, {"x": 1}))
    assert result == Result(correlation_id, {"x": 1})
    assert isinstance(result, Result)
    assert exact(result.correlation_id) == exact(correlation_id)
    failure = decode_message(encode_error(correlation_id, "E", "v", [1]))
    assert failure == Failure(correlation_id, "E", "v", (1,))
    assert isinstance(failure, Failure)
    assert exact(failure.correlation_id) == exact(correlation_id)


def test_decode_result_without_data_or_correlation_id() -> None:
    assert decode_message('{"type": "result", "success": true}') == Result(None, None)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, ("UnknownError", "", ())),
        ({}, ("UnknownError", "", ())),
        ("a string", ("UnknownError", "", ())),
        ({"exc_type": "Timeout"}, ("Timeout", "", ())),
        ({"value": "boom"}, ("UnknownError", "boom", ())),
        ({"exc_args": [1, "a"]}, ("UnknownError", "", (1, "a"))),
        ({"exc_type": 3, "value": None, "exc_args": "x"}, ("UnknownError", "", ())),
    ],
)
def test_decode_failure_with_missing_pieces_uses_defaults(
    error: object, expected: tuple[str, str, tuple[object, ...]]
) -> None:
    message: dict[str, object] = {"type": "result", "success": False, "correlation_id": 9}
    if error is not None:
        message["error"] = error
    assert decode_message(json.dumps(message)) == Failure(9, *expected)


def test_decode_events() -> None:
    assert decode_message(encode_connected("s1")) == Event("connected", {"socket_id": "s1"})
    assert decode_message(encode_event("chat", [1, "x"])) == Event("chat", [1, "x"])
    assert decode_message('{"type": "event", "event": "e"}') == Event("e", None)
    # More keys may be added to hub messages (SPEC §5.1).
    assert decode_message('{"type": "event", "event": "e", "data": 1, "channel": "c"}') == Event(
        "e", 1
    )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'{"type": "event"}', "a binary frame: the server sends JSON text"),
        ("", "the frame is not JSON (Expecting value: line 1 column 1 (char 0))"),
        ('{"type": "result", "success": true, "data": NaN}', "the frame is not JSON (NaN is not"),
        ("[" * 100_000, "the frame is not JSON (it is nested too deeply)"),
        ("[1]", "expected a JSON object, got a JSON array"),
        ("null", "expected a JSON object, got a JSON null"),
        ("{}", '"type" must be "result" or "event", got null'),
        ('{"type": "call"}', '"type" must be "result" or "event", got "call"'),
        ('{"type": ["result"]}', '"type" must be "result" or "event", got a JSON array'),
        ('{"type": "' + "x" * 100 + '"}', '"type" must be "result" or "event", got "xxxx'),
        ('{"type": "result"}', '"success" must be true or false, got a JSON null'),
        ('{"type": "result", "success": 1}', '"success" must be true or false, got a JSON number'),
        ('{"type": "event"}', '"event" must be a string, got a JSON null'),
        ('{"type": "event", "event": 5}', '"event" must be a string, got a JSON number'),
    ],
    ids=lambda value: repr(value)[:30],
)
def test_unreadable_messages(frame: str | bytes, reason: str) -> None:
    unreadable = decode_message(frame)
    assert isinstance(unreadable, Unreadable)
    assert unreadable.reason.startswith(reason)
    assert len(unreadable.reason) < 200


# Round trips ---------------------------------------------------------------------------------


def test_bad_call_answered_decodes_as_failure_with_its_correlation_id() -> None:
    bad = decode_call('{"data": [], "correlation_id": {"id": [1]}}')
    assert isinstance(bad, BadCall)
    failure = decode_message(encode_error(bad.correlation_id, bad.exc_type, bad.value))
    assert failure == Failure({"id": [1]}, "MalformedRequest", bad.value, ())


@pytest.mark.parametrize("correlation_id", CORRELATION_IDS, ids=ID_NAMES)
def test_call_round_trip(correlation_id: object) -> None:
    data = {"s": "é\ud800", "n": [1, 2.5, None], "o": {"deep": {"er": True}}}
    call = decode_call(encode_call("method", data, correlation_id))
    assert isinstance(call, Call)
    assert exact((call.method, call.data, call.correlation_id)) == exact(
        ("method", data, correlation_id)
    )


@FUZZ_JSON
@given(method=TEXT, data=JSON_OBJECTS, correlation_id=JSON_VALUES)
def test_fuzz_call_round_trip(method: str, data: dict[str, object], correlation_id: object) -> None:
    frame = encode_call(method, data, correlation_id)
    frame.encode("utf-8")
    call = decode_call(frame)
    assert isinstance(call, Call)
    assert exact((call.method, call.data, call.correlation_id)) == exact(
        (method, data, correlation_id)
    )


@FUZZ_JSON
@given(correlation_id=JSON_VALUES, data=JSON_VALUES)
def test_fuzz_result_round_trip(correlation_id: object, data: object) -> None:
    result = decode_message(encode_result(correlation_id, data))
    assert isinstance(result, Result)
    assert exact((result.correlation_id, result.data)) == exact((correlation_id, data))


@FUZZ_JSON
@given(event=TEXT, data=JSON_VALUES)
def test_fuzz_event_round_trip(event: str, data: object) -> None:
    decoded = decode_message(encode_event(event, data))
    assert isinstance(decoded, Event)
    assert exact((decoded.event, decoded.data)) == exact((event, data))


@FUZZ_JSON
@given(
    correlation_id=JSON_VALUES,
    exc_type=TEXT,
    value=TEXT,
    exc_args=st.lists(JSON_VALUES, max_size=4) | st.tuples(JSON_VALUES, JSON_VALUES),
)
def test_fuzz_error_round_trip(
    correlation_id: object, exc_type: str, value: str, exc_args: list[object]
) -> None:
    failure = decode_message(encode_error(correlation_id, exc_type, value, exc_args))
    assert isinstance(failure, Failure)
    assert exact(
        (failure.correlation_id, failure.exc_type, failure.value, failure.exc_args)
    ) == exact((correlation_id, exc_type, value, tuple(exc_args)))


@FUZZ
@given(socket_id=TEXT)
def test_fuzz_connected_round_trip(socket_id: str) -> None:
    decoded = decode_message(encode_connected(socket_id))
    assert isinstance(decoded, Event)
    assert exact((decoded.event, decoded.data)) == exact(("connected", {"socket_id": socket_id}))


# Anything at all: of the kinds JSON cannot hold too, and values that break when asked.
ANYTHING = st.recursive(
    JSON_SCALARS
    | st.floats()
    | st.binary(max_size=5)
    | st.sets(st.integers(), max_size=3)
    | st.builds(object)
    | st.builds(BrokenRepr)
    | st.dates(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(JSON_SCALARS | st.tuples(st.integers()), children, max_size=3)
    ),
    max_leaves=10,
)


@FUZZ_JSON
@given(correlation_id=ANYTHING, exc_args=st.lists(ANYTHING, max_size=4))
def test_fuzz_encode_error_never_raises(correlation_id: object, exc_args: list[object]) -> None:
    frame = encode_error(correlation_id, "E", "v", exc_args)
    failure = decode_message(frame)
    assert isinstance(failure, Failure)
    assert (failure.exc_type, failure.value, len(failure.exc_args)) == ("E", "v", len(exc_args))


@FUZZ_JSON
@given(data=ANYTHING)
def test_fuzz_encoders_raise_only_unencodable_value(data: object) -> None:
    encoders: list[Callable[[], str]] = [
        lambda: encode_result(1, data),
        lambda: encode_event("e", data),
        lambda: encode_call("m", {"x": data}, 1),
    ]
    for encode in encoders:
        try:
            frame = encode()
        except UnencodableValue as exc:
            problem = str(exc)
        else:
            parse(frame)
            continue
        assert "cannot be sent as JSON" in problem


# Decoders never raise -------------------------------------------------------------------------


def assert_decoders_survive(frame: str | bytes) -> None:
    call = decode_call(frame)
    assert isinstance(call, Call | BadCall)
    if isinstance(call, Call):
        assert isinstance(call.method, str)
        assert isinstance(call.data, dict)
    else:
        assert call.exc_type in {"MalformedRequest", "IncorrectSignature"}
        assert call.value
    message = decode_message(frame)
    assert isinstance(message, Result | Failure | Event | Unreadable)


# Arbitrary text, with pieces of JSON and of the protocol mixed in so that some of it almost
# parses, or parses into something odd.
JSON_TOKENS = st.sampled_from(
    [*'{}[]":,-.0123456789eE ', "null", "true", "NaN", "-Infinity", "1e999", "\\u", "\\ud800"]
    + [f'"{key}"' for key in ("method", "data", "correlation_id", "type", "result", "success")]
    + [f'"{key}"' for key in ("error", "exc_type", "exc_args", "event")]
)


@FUZZ
@given(st.lists(CHARACTERS | JSON_TOKENS).map("".join))
def test_fuzz_decoders_never_raise_on_text(frame: str) -> None:
    assert_decoders_survive(frame)


@FUZZ
@given(st.binary())
def test_fuzz_decoders_never_raise_on_bytes(frame: bytes) -> None:
    assert decode_call(frame) == BadCall(
        "MalformedRequest", "binary frames are not supported: send JSON text", None
    )
    assert decode_message(frame) == Unreadable("a binary frame: the server sends JSON text")


@FUZZ_JSON
@given(JSON_VALUES)
def test_fuzz_decoders_never_raise_on_json(value: object) -> None:
    assert_decoders_survive(json.dumps(value))
    assert_decoders_survive(json.dumps(value, ensure_ascii=False))


# Mangled JSON: valid frames cut short or with a character replaced.
@FUZZ_JSON
@given(JSON_VALUES, st.integers(min_value=0), CHARACTERS)
def test_fuzz_decoders_never_raise_on_mangled_json(value: object, cut: int, char: str) -> None:
    text = json.dumps({"method": "m", "data": value, "correlation_id": value})
    position = cut % (len(text) + 1)
    assert_decoders_survive(text[:position])
    assert_decoders_survive(text[:position] + char + text[position + 1 :])


MISSING = object()


def call_oracle(message: dict[str, object]) -> tuple[str, object] | None:
    """What decode_call says of a JSON object: (exc_type, correlation_id), or None for a Call."""
    correlation_id = message.get("correlation_id")
    if not isinstance(message.get("method"), str):
        return ("MalformedRequest", correlation_id)
    data = message.get("data")
    if data is not None and not isinstance(data, dict):
        return ("IncorrectSignature", correlation_id)
    return None


CALL_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "method": JSON_VALUES | TEXT,
        "data": JSON_VALUES | JSON_OBJECTS,
        "correlation_id": JSON_VALUES,
        "other": JSON_VALUES,
    },
)


@FUZZ_JSON
@given(CALL_SHAPED)
def test_fuzz_call_shaped_objects_follow_the_rules(message: dict[str, object]) -> None:
    decoded = decode_call(json.dumps(message))
    expected = call_oracle(message)
    if expected is None:
        assert isinstance(decoded, Call)
        data = message.get("data")
        assert exact((decoded.method, decoded.data, decoded.correlation_id)) == exact(
            (message["method"], {} if data is None else data, message.get("correlation_id"))
        )
    else:
        assert isinstance(decoded, BadCall)
        assert exact((decoded.exc_type, decoded.correlation_id)) == exact(expected)
    assert_decoders_survive(json.dumps(message))


MESSAGE_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["result", "event", "call"]) | JSON_VALUES,
        "success": st.booleans() | JSON_VALUES,
        "data": JSON_VALUES,
        "event": TEXT | JSON_VALUES,
        "correlation_id": JSON_VALUES,
        "error": st.fixed_dictionaries(
            {},
            optional={
                "exc_type": TEXT | JSON_VALUES,
                "value": TEXT | JSON_VALUES,
                "exc_args": st.lists(JSON_VALUES) | JSON_VALUES,
            },
        )
        | JSON_VALUES,
    },
)


@FUZZ_JSON
@given(MESSAGE_SHAPED)
def test_fuzz_message_shaped_objects_decode(message: dict[str, object]) -> None:
    decoded = decode_message(json.dumps(message))
    kind, success = message.get("type"), message.get("success")
    if kind == "result" and success is True:
        assert isinstance(decoded, Result)
    elif kind == "result" and success is False:
        assert isinstance(decoded, Failure)
        assert isinstance(decoded.exc_type, str)
        assert isinstance(decoded.value, str)
        assert isinstance(decoded.exc_args, tuple)
    elif kind == "event" and isinstance(message.get("event"), str):
        assert isinstance(decoded, Event)
        assert exact((decoded.event, decoded.data)) == exact(
            (message["event"], message.get("data"))
        )
    else:
        assert isinstance(decoded, Unreadable)


# The sans-IO promise --------------------------------------------------------------------------


def test_protocol_imports_no_io_library() -> None:
    code = (
        "import sys, triosvc.ws.protocol; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'trio', 'asyncio', 'anyio', 'sniffio', 'socket', 'selectors', 'hypercorn'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
