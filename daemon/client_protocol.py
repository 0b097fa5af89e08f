"""The contract both clients keep: :class:`daemon.client.DaemonClient` (ZeroMQ) and
:class:`daemon.bridge.BridgeClient` (through a pipe, for a GIMP without pyzmq).  Standard library only."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .messages import EstimateReply, Image, JobProgress, StatusReply
from .records import JobResult


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
