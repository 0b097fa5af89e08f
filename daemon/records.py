"""Plain records shared by the client, the bridge and the GIMP plug-in.  Standard library only, so that
a GIMP whose Python cannot load pyzmq, msgpack or blake3 can still describe images and read results
(it then talks to the daemon through :mod:`daemon.bridge`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Union

Buffer = Union[bytes, bytearray, memoryview]


class DType(str, enum.Enum):
    U8 = "u8"
    U16 = "u16"
    F32 = "f32"

    @property
    def itemsize(self) -> int:
        return {DType.U8: 1, DType.U16: 2, DType.F32: 4}[self]


@dataclass(frozen=True)
class ImageSpec:
    """How one binary frame is to be read: a height × width × channels array, row-major, little-endian."""

    width: int
    height: int
    channels: int  # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    dtype: DType

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * self.dtype.itemsize

    def to_wire(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "channels": self.channels, "dtype": self.dtype.value}

    @classmethod
    def from_wire(cls, fields: Any) -> ImageSpec:
        """The inverse of :meth:`to_wire`, without the daemon's limits (protocol.validate_image_spec has those)."""
        return cls(int(fields["width"]), int(fields["height"]), int(fields["channels"]), DType(fields["dtype"]))


class DaemonError(Exception):
    """Base class of the client's errors; every message is fit to show to a user."""


class DaemonUnreachableError(DaemonError):
    pass


class DaemonJobError(DaemonError):
    """The daemon answered with an error; ``code`` is an :class:`ErrorCode` value."""

    def __init__(self, code: str, message: str, largest_size: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.largest_size = largest_size


@dataclass(frozen=True)
class Image:
    """Raw pixels as sent over the wire: ``data`` holds spec.nbytes bytes, row-major, little-endian."""

    spec: ImageSpec
    data: Buffer


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    stage: int
    stages: int
    iteration: int
    total_iterations: int
    width: int
    height: int
    losses: dict[str, float]
    elapsed_s: float
    preview: Image | None = None

    def to_body(self) -> dict[str, Any]:
        """The fields :meth:`from_body` reads (the preview travels separately)."""
        return {name: getattr(self, name) for name in
                ("job_id", "stage", "stages", "iteration", "total_iterations", "width", "height", "losses", "elapsed_s")}

    @classmethod
    def from_body(cls, body: dict[str, Any], preview: Image | None = None) -> JobProgress:
        return cls(body["job_id"], body["stage"], body["stages"], body["iteration"], body["total_iterations"],
                   body["width"], body["height"], body["losses"], body["elapsed_s"], preview)


@dataclass(frozen=True)
class JobResult:
    job_id: str
    image: Image  # float32 RGB
    elapsed_s: float
