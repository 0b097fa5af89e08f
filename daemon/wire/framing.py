"""The wire protocol's framing between clients and the daemon (docs/protocol.md): ``[header, frame_0, ...]`` with
a msgpack header ``{"v", "type", "body", "parts"}`` and the binary parts after it, each one frame or over TCP
consecutive frames of at most the transport's frame size, joined after their declared sizes are checked against
the caps.  The transport authenticates the peer (docs/security.md), so messages carry no signature.  Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .limits import MAX_HEADER_BYTES, MAX_IMAGES, MessageCaps
from .messages import PROTOCOL_VERSION, Buffer, ErrorCode, MessageType, ProtocolError, invalid


@dataclass
class Message:
    type: MessageType
    body: dict[str, Any]
    frames: list[Buffer] = field(default_factory=list)  # the binary parts, joined


class Codec:
    """Encodes and decodes messages within one transport's caps (:class:`MessageCaps`)."""

    def __init__(self, caps: MessageCaps | None = None) -> None:
        self.caps = caps or MessageCaps.for_images()

    def encode(self, message_type: MessageType, body: Mapping[str, Any] | None = None,
               frames: Sequence[Buffer] = ()) -> list[Buffer]:
        sizes = [memoryview(frame).nbytes for frame in frames]
        header = msgpack.packb({"v": PROTOCOL_VERSION, "type": message_type.value, "body": dict(body or {}),
                                "parts": sizes}, use_bin_type=True)
        parts: list[Buffer] = [header]
        for frame, size in zip(frames, sizes):
            parts.extend(split_part(frame, size, self.caps.max_frame_bytes))
        return parts

    def decode(self, parts: Sequence[Buffer]) -> Message:
        """Check the header against the caps, unpack it, then join the binary frames into its parts;
        raise ProtocolError (invalid_request / version_mismatch)."""
        if not parts:
            raise invalid("an empty message")
        if len(parts) > self.caps.max_frames:
            raise invalid(f"a message of {len(parts)} frames; the limit is {self.caps.max_frames}")
        header, *frames = parts
        if memoryview(header).nbytes > MAX_HEADER_BYTES:
            raise invalid(f"the header frame is larger than {MAX_HEADER_BYTES} bytes")
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
            raise invalid(f"unknown message type {fields.get('type')!r}") from None
        body = fields.get("body")
        if not isinstance(body, dict):
            raise invalid("header field body must be a map")
        sizes = self._part_sizes(fields.get("parts", []))
        return Message(message_type, body, join_parts(frames, sizes))

    def _part_sizes(self, sizes: object) -> list[int]:
        if not isinstance(sizes, list) or len(sizes) > MAX_IMAGES:
            raise invalid(f"header field parts must list at most {MAX_IMAGES} sizes")
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= self.caps.max_part_bytes:
                raise invalid(f"a binary part of {size!r} bytes; the limit is {self.caps.max_part_bytes}")
        if sum(sizes) > self.caps.max_message_bytes:
            raise invalid(f"binary parts of {sum(sizes)} bytes in all; the limit is {self.caps.max_message_bytes}")
        return sizes


def split_part(part: Buffer, size: int, max_frame_bytes: int) -> list[Buffer]:
    """``part`` as frames of at most ``max_frame_bytes`` (views, not copies); one frame if it fits."""
    if size <= max_frame_bytes:
        return [part]
    view = memoryview(part)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return [view[start:start + max_frame_bytes] for start in range(0, size, max_frame_bytes)]


def join_parts(frames: Sequence[Buffer], sizes: Sequence[int]) -> list[Buffer]:
    """The parts of ``sizes`` bytes from consecutive ``frames``; a part in one frame is not copied."""
    parts: list[Buffer] = []
    index = 0
    for size in sizes:
        start, filled = index, 0
        while index == start or filled < size:  # at least one frame, an empty one for an empty part
            if index >= len(frames):
                raise invalid(f"the frames end before the declared parts ({len(sizes)} parts, {len(frames)} frames)")
            filled += memoryview(frames[index]).nbytes
            index += 1
        if filled != size:
            raise invalid(f"frames of {filled} bytes do not make a part of {size} bytes")
        parts.append(frames[start] if index - start == 1 else b"".join(frames[start:index]))
    if index != len(frames):
        raise invalid(f"{len(frames) - index} frame(s) beyond the declared parts")
    return parts


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
        raise invalid(f"the header is not valid msgpack ({type(error).__name__}: {error})") from None
    except RecursionError:
        raise invalid("the header is nested too deeply") from None
    if not isinstance(fields, dict):
        raise invalid("the header must be a msgpack map")
    return fields
