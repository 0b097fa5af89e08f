"""The contract every client keeps, and the records it returns: :class:`StyleClient`, which
:class:`daemon.client.zeromq.DaemonClient` (ZeroMQ) and :class:`daemon.client.bridge.BridgeClient`
(through a pipe, for a GIMP whose Python cannot load pyzmq or msgpack) implement.  Standard library
only, with the torch-free message records."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..wire.messages import EstimateReply, Image, JobProgress, StatusReply


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


@runtime_checkable
class StyleClient(Protocol):
    """A connection to the daemon.  Every call means the same in both clients:

    - ``submit`` queues a job (its images, settings and the spatial-control masks) and returns its id;
    - ``wait`` follows that job to its result, calling ``on_progress``; with ``cancel`` set it cancels it;
      the result counts the pixel bytes the client sent for the job's images (``image_bytes_sent``);
    - ``cancel`` asks the daemon to stop the job: ``wait`` then raises DaemonJobError with code ``cancelled``;
    - ``stylize`` is ``submit`` then ``wait``;
    - ``status`` is the daemon's state, ``estimate`` what a job would cost, each a typed record.

    Errors are DaemonError subclasses whose messages are fit to show to a user.
    """

    transport: str

    def submit(self, content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None, *,
               regions: Sequence[Image | None] | None = None, style_masks: Sequence[Image | None] | None = None,
               **options: Any) -> str: ...

    def wait(self, job_id: str, *, on_progress: Callable[[JobProgress], None] | None = None,
             cancel: threading.Event | None = None) -> JobResult: ...

    def cancel(self, job_id: str) -> None: ...

    def stylize(self, content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None, *,
                on_progress: Callable[[JobProgress], None] | None = None, cancel: threading.Event | None = None,
                **options: Any) -> JobResult: ...

    def status(self) -> StatusReply: ...

    def estimate(self, settings: dict[str, Any] | None, width: int, height: int, *,
                 style_sizes: Sequence[tuple[int, int]] = ()) -> EstimateReply: ...

    def close(self) -> None: ...

    def __enter__(self) -> StyleClient: ...

    def __exit__(self, *_: object) -> None: ...
