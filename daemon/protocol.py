"""The wire protocol between clients (plug-in, CLI, tests) and the daemon.  Torch-free.

Every message is a multipart ZeroMQ message (docs/protocol.md has the full description)::

    [header, signature, frame_0, frame_1, ...]

``header`` is a msgpack map ``{"v": PROTOCOL_VERSION, "type": str, "id": str, "ts": float, "body": map}``;
``signature`` is HMAC-SHA256 over the header and the BLAKE3 digest of every binary frame (each preceded
by its length), and is verified before anything is unpacked.  Binary frames carry images as raw arrays, described in the
body by :class:`ImageSpec`.  A message id seen before, or a timestamp outside the replay window, is
rejected.  The daemon's ROUTER socket adds the peer's routing identity in front; that is not part of
this format.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import blake3
import msgpack

from nst_engine.errors import InvalidSettingsError
from nst_engine.schema import FrontEnd
from nst_engine.settings import check_values

from .records import Buffer, DType, ImageSpec

PROTOCOL_VERSION = 1
SIGNATURE_SCHEME = "hmac-sha256-blake3"
SIGNATURE_BYTES = 32
MAX_HEADER_BYTES = 64 * 1024
REPLAY_WINDOW_S = 300.0
DEFAULT_MAX_IMAGE_SIDE = 16384
DEFAULT_MAX_IMAGE_PIXELS = 64 * 2**20  # 8192 × 8192

_PARALLEL_DIGEST_BYTES = 4 * 2**20


class MessageType(str, enum.Enum):
    HELLO = "hello"  # client → daemon: version handshake
    WELCOME = "welcome"  # daemon → client: handshake accepted
    SUBMIT = "submit"  # client → daemon: a job, with its images as frames
    ACCEPTED = "accepted"  # daemon → client: job queued (job id, queue position)
    PROGRESS = "progress"
    PREVIEW = "preview"  # progress plus the current image as a frame
    RESULT = "result"  # the stylised image as a frame
    ERROR = "error"  # machine-readable code plus a human message
    CANCEL = "cancel"
    STATUS = "status"
    STATUS_REPLY = "status_reply"
    PING = "ping"
    PONG = "pong"
    HEARTBEAT = "heartbeat"  # client → daemon while it has jobs; no reply
    SHUTDOWN = "shutdown"
    SHUTTING_DOWN = "shutting_down"


class ErrorCode(str, enum.Enum):
    INVALID_REQUEST = "invalid_request"
    UNAUTHORISED = "unauthorised"
    VERSION_MISMATCH = "version_mismatch"
    BUSY = "busy"
    WEIGHTS_UNAVAILABLE = "weights_unavailable"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message that must be refused; ``code`` says why in machine-readable form."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Message:
    type: MessageType
    body: dict[str, Any]
    frames: list[Buffer] = field(default_factory=list)
    id: str = ""
    timestamp: float = 0.0


# ---------------------------------------------------------------------------------------------------
# Settings of a job: checked against the engine's settings schema (torch-free) here, so that the
# message can name the field; the engine validates again.
# ---------------------------------------------------------------------------------------------------
def validate_settings(settings: object) -> dict[str, Any]:
    """Check a submit's ``settings`` map; raise ProtocolError naming the first bad field."""
    if not isinstance(settings, Mapping):
        raise _invalid("settings must be a map")
    try:
        check_values(settings, FrontEnd.WIRE, prefix="settings.")
    except InvalidSettingsError as error:
        raise _invalid(str(error)) from None
    return dict(settings)


def validate_image_spec(spec: object, where: str, max_side: int, max_pixels: int) -> ImageSpec:
    if not isinstance(spec, Mapping):
        raise _invalid(f"{where} must be a map with width, height, channels and dtype")
    values: dict[str, int] = {}
    for name in ("width", "height", "channels"):
        value = spec.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"{where}.{name} must be an integer")
        values[name] = value
    for name in ("width", "height"):
        if not 1 <= values[name] <= max_side:
            raise _invalid(f"{where}.{name} must be from 1 to {max_side}, got {values[name]}")
    if values["width"] * values["height"] > max_pixels:
        raise _invalid(f"{where} has {values['width'] * values['height']} pixels; the limit is {max_pixels}")
    if not 1 <= values["channels"] <= 4:
        raise _invalid(f"{where}.channels must be 1 to 4, got {values['channels']}")
    try:
        dtype = DType(spec.get("dtype"))
    except ValueError:
        raise _invalid(f"{where}.dtype must be one of u8, u16, f32, got {spec.get('dtype')!r}") from None
    return ImageSpec(values["width"], values["height"], values["channels"], dtype)


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, message)


# ---------------------------------------------------------------------------------------------------
# Framing and signing
# ---------------------------------------------------------------------------------------------------
def new_key() -> bytes:
    return secrets.token_bytes(32)


def frame_digest(frame: Buffer) -> bytes:
    """BLAKE3-256 of one binary frame, on several cores when the frame is large."""
    threads = blake3.blake3.AUTO if memoryview(frame).nbytes >= _PARALLEL_DIGEST_BYTES else 1
    return blake3.blake3(frame, max_threads=threads).digest()


def sign(key: bytes, header: Buffer, frames: Sequence[Buffer]) -> bytes:
    """HMAC-SHA256 over the header and each frame's digest, each preceded by the 8-byte length of the
    part it stands for, so that bytes cannot be moved across a frame boundary unnoticed.

    Hash-then-MAC rather than HMAC over the frames' bytes: SHA-256 runs at 0.2–0.4 GB/s on CPUs
    without SHA extensions, which capped image transfer well below loopback speed, while BLAKE3
    (collision-resistant, 256-bit) digests several GB/s.  Forging a message still needs either the
    key or a BLAKE3 collision."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(struct.pack("<Q", memoryview(header).nbytes))
    mac.update(header)
    for frame in frames:
        mac.update(struct.pack("<Q", memoryview(frame).nbytes))
        mac.update(frame_digest(frame))
    return mac.digest()


class ReplayGuard:
    """Remembers message ids within the replay window; older timestamps are refused outright."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, max_ids: int = 100_000) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, message_id: str, timestamp: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self._seen and (next(iter(self._seen.values())) < now - self.window_s or len(self._seen) > self.max_ids):
            self._seen.popitem(last=False)
        if abs(now - timestamp) > self.window_s:
            raise ProtocolError(ErrorCode.UNAUTHORISED, "message timestamp is outside the replay window")
        if message_id in self._seen:
            raise ProtocolError(ErrorCode.UNAUTHORISED, "message id was already used (replayed message)")
        self._seen[message_id] = now


class Codec:
    """Encodes and decodes signed messages with one connection's key."""

    def __init__(self, key: bytes, replay_guard: ReplayGuard | None = None) -> None:
        if len(key) < 16:
            raise ValueError("the HMAC key must be at least 16 bytes")
        self.key = key
        self.replay_guard = replay_guard

    def encode(self, message_type: MessageType, body: Mapping[str, Any] | None = None,
               frames: Sequence[Buffer] = ()) -> list[Buffer]:
        header = msgpack.packb({
            "v": PROTOCOL_VERSION,
            "type": message_type.value,
            "id": secrets.token_hex(16),
            "ts": time.time(),
            "body": dict(body or {}),
        }, use_bin_type=True)
        return [header, sign(self.key, header, frames), *frames]

    def decode(self, parts: Sequence[Buffer]) -> Message:
        """Verify, then unpack; raise ProtocolError (unauthorised / invalid_request / version_mismatch)."""
        if len(parts) < 2:
            raise _invalid(f"a message needs a header and a signature frame, got {len(parts)} frame(s)")
        header, signature, *frames = parts
        if memoryview(header).nbytes > MAX_HEADER_BYTES:
            raise _invalid(f"the header frame is larger than {MAX_HEADER_BYTES} bytes")
        if memoryview(signature).nbytes != SIGNATURE_BYTES:
            raise ProtocolError(ErrorCode.UNAUTHORISED, "missing or malformed signature")
        if not hmac.compare_digest(sign(self.key, header, frames), bytes(signature)):
            raise ProtocolError(ErrorCode.UNAUTHORISED, "bad signature")
        fields = _unpack_header(bytes(header))
        version = fields.get("v")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.VERSION_MISMATCH,
                f"protocol version {version!r} is not supported; this side speaks version {PROTOCOL_VERSION}",
            )
        try:
            message_type = MessageType(fields.get("type"))
        except ValueError:
            raise _invalid(f"unknown message type {fields.get('type')!r}") from None
        message_id, timestamp, body = fields.get("id"), fields.get("ts"), fields.get("body")
        if not isinstance(message_id, str) or not 1 <= len(message_id) <= 64:
            raise _invalid("header field id must be a string of 1 to 64 characters")
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
            raise _invalid("header field ts must be a number")
        if not isinstance(body, dict):
            raise _invalid("header field body must be a map")
        if self.replay_guard is not None:
            self.replay_guard.check(message_id, float(timestamp))
        return Message(message_type, body, list(frames), message_id, float(timestamp))


def _unpack_header(data: bytes) -> dict[str, Any]:
    """A fresh, bounded unpack of one header: string keys, valid UTF-8, no binary or extension data,
    no trailing bytes, nesting bounded by msgpack's own stack limit."""
    try:
        fields = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_HEADER_BYTES, max_bin_len=0, max_ext_len=0,
            max_array_len=4096, max_map_len=1024,
        )
    except (ValueError, msgpack.UnpackException) as error:
        raise _invalid(f"the header is not valid msgpack ({type(error).__name__}: {error})") from None
    except RecursionError:
        raise _invalid("the header is nested too deeply") from None
    if not isinstance(fields, dict):
        raise _invalid("the header must be a msgpack map")
    return fields
