"""The wire format in isolation: signing before parsing, bounded unpacking, validation messages."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import msgpack
import pytest

from daemon.protocol import (
    PROTOCOL_VERSION,
    Codec,
    DType,
    ErrorCode,
    ImageSpec,
    MessageType,
    ProtocolError,
    ReplayGuard,
    new_key,
    sign,
    validate_image_spec,
    validate_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def codec() -> Codec:
    return Codec(new_key(), ReplayGuard())


def signed(codec: Codec, header: bytes, frames: list[bytes] = ()) -> list[bytes]:
    return [header, sign(codec.key, header, frames), *frames]


def test_round_trip_with_frames(codec):
    sender = Codec(codec.key)
    parts = sender.encode(MessageType.SUBMIT, {"a": [1, 2.5, "x"]}, [b"\x00" * 12, b"xy"])
    message = codec.decode(parts)
    assert message.type is MessageType.SUBMIT and message.body == {"a": [1, 2.5, "x"]}
    assert [bytes(f) for f in message.frames] == [b"\x00" * 12, b"xy"]


@pytest.mark.parametrize("tamper", ["header", "frame", "signature", "move-boundary"])
def test_tampering_is_unauthorised(codec, tamper):
    parts = Codec(codec.key).encode(MessageType.PING, {"k": 1}, [b"abcd", b"ef"])
    if tamper == "header":
        parts[0] = parts[0][:-1] + b"\x02"
    elif tamper == "frame":
        parts[2] = b"abce"
    elif tamper == "signature":
        parts[1] = bytes(32)
    else:
        parts[2], parts[3] = b"abc", b"def"
    with pytest.raises(ProtocolError) as raised:
        codec.decode(parts)
    assert raised.value.code is ErrorCode.UNAUTHORISED


def test_one_changed_byte_in_a_large_frame_is_unauthorised(codec):
    """Large frames are digested on several threads; a change anywhere in them must still be caught."""
    frame = bytearray(9 * 2**20)
    parts = Codec(codec.key).encode(MessageType.SUBMIT, {}, [bytes(frame)])
    assert bytes(codec.decode(parts).frames[0]) == bytes(frame)
    parts = Codec(codec.key).encode(MessageType.SUBMIT, {}, [bytes(frame)])
    frame[7 * 2**20 + 3] = 1
    parts[2] = bytes(frame)
    with pytest.raises(ProtocolError) as raised:
        codec.decode(parts)
    assert raised.value.code is ErrorCode.UNAUTHORISED


def test_signature_is_checked_before_unpacking(codec, monkeypatch):
    def must_not_unpack(*args, **kwargs):
        raise AssertionError("unpacked before the signature was verified")

    monkeypatch.setattr(msgpack, "unpackb", must_not_unpack)
    with pytest.raises(ProtocolError, match="signature"):
        codec.decode([b"\xde\x00\x04zzz", bytes(32)])


@pytest.mark.parametrize("parts", [[], [b"only a header"], [b"h", b"short sig"]])
def test_missing_frames_or_signature(codec, parts):
    with pytest.raises(ProtocolError):
        codec.decode(parts)


def test_a_replayed_message_is_refused(codec):
    parts = Codec(codec.key).encode(MessageType.PING)
    codec.decode(parts)
    with pytest.raises(ProtocolError, match="replayed") as raised:
        codec.decode(parts)
    assert raised.value.code is ErrorCode.UNAUTHORISED


def test_an_old_message_is_refused():
    guard = ReplayGuard(window_s=10)
    with pytest.raises(ProtocolError, match="replay window"):
        guard.check("id", time.time() - 60)


BAD_HEADERS = {
    "not msgpack": b"\xc1",
    "truncated": msgpack.packb({"v": 1, "type": "ping"})[:-2],
    "trailing bytes": msgpack.packb({"v": 1, "type": "ping", "id": "a", "ts": 0.0, "body": {}}) + b"\x00",
    "map claims more entries": b"\xde\x00\x04zzz",
    "nesting deeper than 1024": b"\x91" * 1100 + b"\xc0",
    "non-string keys": msgpack.packb({1: 2}),
    "invalid utf-8": b"\x81\xa1v\xa2\xff\xfe",
    "binary data": msgpack.packb({"v": b"bytes"}, use_bin_type=True),
    "not a map": msgpack.packb([1, 2, 3]),
    "huge declared array": b"\xdd\xff\xff\xff\xff",
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_malformed_signed_headers_are_invalid_requests(codec, header):
    with pytest.raises(ProtocolError) as raised:
        codec.decode(signed(codec, header))
    assert raised.value.code is ErrorCode.INVALID_REQUEST


def test_a_decode_succeeds_right_after_a_failed_one(codec):
    with pytest.raises(ProtocolError):
        codec.decode(signed(codec, b"\x91" * 1100 + b"\xc0"))
    assert codec.decode(Codec(codec.key).encode(MessageType.PING)).type is MessageType.PING


def header(**fields) -> bytes:
    base = {"v": PROTOCOL_VERSION, "type": "ping", "id": "abc", "ts": time.time(), "body": {}}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(
    ("fields", "code", "match"),
    [
        ({"v": 99}, ErrorCode.VERSION_MISMATCH, "version 99"),
        ({"v": ...}, ErrorCode.VERSION_MISMATCH, "version None"),
        ({"type": "teleport"}, ErrorCode.INVALID_REQUEST, "unknown message type"),
        ({"type": ...}, ErrorCode.INVALID_REQUEST, "unknown message type"),
        ({"id": 5}, ErrorCode.INVALID_REQUEST, "id must be a string"),
        ({"ts": "now"}, ErrorCode.INVALID_REQUEST, "ts must be a number"),
        ({"body": [1]}, ErrorCode.INVALID_REQUEST, "body must be a map"),
    ],
)
def test_header_fields_are_checked(codec, fields, code, match):
    with pytest.raises(ProtocolError, match=match) as raised:
        codec.decode(signed(codec, header(**fields)))
    assert raised.value.code is code


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"style_weight": float("nan")}, "settings.style_weight must be a finite number"),
        ({"content_weight": -1}, "settings.content_weight must be a finite number"),
        ({"iterations": 2.5}, "settings.iterations must be an integer"),
        ({"iterations": True}, "settings.iterations must be an integer"),
        ({"size": 10**9}, "settings.size"),
        ({"optimizer": "sgd"}, "settings.optimizer must be one of lbfgs, adam"),
        ({"colors": 1}, "settings.colors must be one of style, luminance, histogram"),
        ({"style_blend_weights": [1, -2]}, "settings.style_blend_weights"),
        ({"colour": "blue"}, "settings.colour is not a known setting"),
    ],
)
def test_settings_errors_name_the_field(settings, match):
    with pytest.raises(ProtocolError, match=match):
        validate_settings(settings)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"width": 0, "height": 4, "channels": 3, "dtype": "u8"}, r"img.width must be from 1"),
        ({"width": 4, "height": 10**6, "channels": 3, "dtype": "u8"}, r"img.height must be from 1"),
        ({"width": 9000, "height": 9000, "channels": 3, "dtype": "u8"}, "pixels; the limit"),
        ({"width": 4, "height": 4, "channels": 5, "dtype": "u8"}, "channels must be 1 to 4"),
        ({"width": 4, "height": 4, "channels": 3, "dtype": "f64"}, "dtype must be one of"),
        ({"width": "4", "height": 4, "channels": 3, "dtype": "u8"}, "width must be an integer"),
    ],
)
def test_image_spec_errors_name_the_field(spec, match):
    with pytest.raises(ProtocolError, match=match):
        validate_image_spec(spec, "img", 16384, 64 * 2**20)


def test_image_spec_byte_length():
    assert ImageSpec(3, 2, 4, DType.F32).nbytes == 96


def test_no_pickle_anywhere():
    for path in [*REPO_ROOT.glob("daemon/*.py"), *REPO_ROOT.glob("nst_engine/**/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not any("pickle" in name for name in names), f"{path} imports pickle"
        assert "recv_pyobj" not in path.read_text() and "send_pyobj" not in path.read_text(), path
