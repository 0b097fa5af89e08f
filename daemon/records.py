"""Plain records shared by the client, the bridge and the GIMP plug-in.  Standard library only (with the
torch-free settings schema), so that a GIMP whose Python cannot load pyzmq or msgpack can still describe
images and read results (it then talks to the daemon through :mod:`daemon.bridge`).

The message bodies themselves are :mod:`daemon.messages`; the ones a caller handles are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import (  # noqa: F401  (re-exported)
    Buffer,
    DType,
    EstimateReply,
    Image,
    ImageSpec,
    JobProgress,
    StatusReply,
)


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
class JobResult:
    job_id: str
    image: Image  # RGB in the submit's result_dtype (float32 unless asked otherwise)
    elapsed_s: float
    image_bytes_sent: int = 0  # the pixel bytes this client sent for the job's images (content, styles, masks, init)
