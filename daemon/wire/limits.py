"""Size limits shared by the daemon, its clients and the pipe bridge.  Standard library only (the bridge's
plug-in side imports it in a GIMP without pyzmq).

Every size a peer declares is checked against these before anything of that size is allocated;
docs/security.md says what each one protects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 64 * 2**20  # 8192 × 8192
BYTES_PER_PIXEL = 4 * 4  # the largest pixel: RGBA float32
MAX_HEADER_BYTES = 64 * 1024
MAX_STYLES = 15
# Binary parts of a message: content, up to 15 styles each with a region and a style mask, an init image
MAX_IMAGES = 1 + 3 * MAX_STYLES + 1
# A sequence job's frames: how many, and how many may be sent ahead of their results (the one the daemon is
# stylising included), which bounds the frames it holds for a job.
MAX_SEQUENCE_FRAMES = 100_000
SEQUENCE_FRAMES_AHEAD = 2
IMAGES_PER_MESSAGE_AT_FULL_SIZE = 3  # content, a style and an init image, each at the pixel limit

# Over TCP a peer can send bytes before CURVE has authenticated it, and libzmq buffers a whole frame of
# up to ZMQ_MAXMSGSIZE bytes before the handshake code sees it.  Small frames bound that memory per
# connection; images are split into frames of this size (see protocol.Codec).
TCP_MAX_FRAME_BYTES = 256 * 1024


def image_bytes(pixels: int) -> int:
    return pixels * BYTES_PER_PIXEL


# libzmq applies ZMQ_MAXMSGSIZE to a frame as it travels, which over CURVE is the payload wrapped in a
# MESSAGE command (name, nonce, MAC, flags); the socket option allows this much beyond a frame.
WIRE_OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class MessageCaps:
    """What one message may hold.  ``max_frame_bytes`` (plus its wire overhead) is also the socket's
    ZMQ_MAXMSGSIZE, the one limit libzmq applies before it allocates; the others are checked frame by
    frame on receipt."""

    max_frame_bytes: int
    max_part_bytes: int  # one binary part (an image) once its frames are joined
    max_message_bytes: int
    max_frames: int

    @property
    def socket_max_bytes(self) -> int:
        """The ZMQ_MAXMSGSIZE that lets every allowed frame through, with its wire overhead."""
        return self.max_frame_bytes + WIRE_OVERHEAD_BYTES

    @classmethod
    def for_images(cls, max_image_pixels: int = MAX_IMAGE_PIXELS, max_frame_bytes: int | None = None) -> MessageCaps:
        """Caps for images of up to ``max_image_pixels``; frames of ``max_frame_bytes`` (None: an image
        travels as one frame)."""
        part = image_bytes(max_image_pixels)
        frame = max(max_frame_bytes or part, MAX_HEADER_BYTES)
        message = IMAGES_PER_MESSAGE_AT_FULL_SIZE * part + MAX_HEADER_BYTES
        frames = 1 + MAX_IMAGES + math.ceil(message / frame)
        return cls(frame, part, message, frames)
