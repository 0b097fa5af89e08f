"""The contract every client keeps, and what both clients share: :class:`StyleClient`, the base of
:class:`daemon.client.zeromq.DaemonClient` (ZeroMQ) and :class:`daemon.client.bridge.BridgeClient`
(through a pipe, for a GIMP whose Python cannot load pyzmq or msgpack), its errors and records.
Standard library only, with the torch-free message records."""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..wire.messages import (
    Buffer,
    DType,
    Error,
    Estimate,
    EstimateReply,
    Image,
    ImageEntry,
    ImageRole,
    ImageSpec,
    JobProgress,
    MessageType,
    Preview,
    ProtocolError,
    Result,
    SequencePlan,
    StatusReply,
    Submit,
    invalid,
)

if TYPE_CHECKING:
    from typing_extensions import Self

_R = TypeVar("_R")
ProgressCallback = Callable[[JobProgress], None]


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

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> DaemonJobError:
        """The daemon's error body (ProtocolError where it is malformed)."""
        error = Error.from_wire(body)
        return cls(error.code.value, error.message, error.largest_size)


@dataclass(frozen=True)
class JobResult:
    job_id: str
    image: Image  # RGB in the submit's result_dtype (float32 unless asked otherwise)
    elapsed_s: float
    image_bytes_sent: int = 0  # the pixel bytes this client sent for the job's images (content, styles, masks, init)
    frame: int | None = None  # a sequence job's frame, from 1


class StyleClient(ABC):
    """A connection to the daemon: every call means the same whatever the transport, and every error is a
    DaemonError whose message is fit to show to a user.  A transport implements the abstract methods."""

    transport: ClassVar[str]

    def __init__(self) -> None:
        self._image_bytes: dict[str, int] = {}  # job id → pixel bytes submitted, until its result

    def submit(self, content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None,
               **options: Any) -> str:
        """Queue a job and return its id; follow it with :meth:`wait`.  ``options`` are :func:`submit_request`'s."""
        request, frames = submit_request(content, styles, settings, **options)
        job_id = self.send_submit(request, frames)
        self._image_bytes[job_id] = sum(memoryview(frame).nbytes for frame in frames)
        return job_id

    def wait(self, job_id: str, *, on_progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None) -> JobResult:
        """Follow the job until its result, calling ``on_progress``.  Raises DaemonJobError (code "cancelled"
        after ``cancel`` is set), or DaemonUnreachableError when the daemon goes silent."""
        try:
            return self._wait(job_id, on_progress, cancel)
        finally:
            self._image_bytes.pop(job_id, None)

    def stylize(self, content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None, *,
                on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                **submit_options: Any) -> JobResult:
        """:meth:`submit` then :meth:`wait`."""
        job_id = self.submit(content, styles, settings, **submit_options)
        return self.wait(job_id, on_progress=on_progress, cancel=cancel)

    def estimate(self, settings: dict[str, Any] | None, width: int, height: int, *,
                 style_sizes: Sequence[tuple[int, int]] = ()) -> EstimateReply:
        """What a job of these settings on a width×height content (and styles of ``style_sizes``) would
        cost now: memory, whole or tiled, seconds, whether it can run and the largest size that can."""
        return self.send_estimate(Estimate(width, height, dict(settings or {}),
                                           tuple((int(w), int(h)) for w, h in style_sizes)))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _job_message(self, kind: str, body: object, frames: Sequence[Buffer],
                     on_progress: ProgressCallback | None) -> JobResult | None:
        """A job's message, however it came: progress and previews go to ``on_progress``, the result is returned."""
        if kind == MessageType.RESULT:
            result = parse_reply(Result, body)
            return JobResult(result.job_id, received_image(result.image, frames), result.elapsed_s,
                             self._image_bytes.get(result.job_id, 0), result.frame)
        if kind == MessageType.PROGRESS and on_progress is not None:
            on_progress(parse_reply(JobProgress, body))
        elif kind == MessageType.PREVIEW and on_progress is not None:
            preview = parse_reply(Preview, body)
            on_progress(dataclasses.replace(preview.progress, preview=received_image(preview.image, frames)))
        return None

    # -- what each transport implements -----------------------------------------------------------
    @abstractmethod
    def send_submit(self, request: Submit, frames: Sequence[Buffer]) -> str:
        """Queue a prepared job (its images as ``frames``, in order) and return its id once accepted."""

    @abstractmethod
    def _wait(self, job_id: str, on_progress: ProgressCallback | None, cancel: threading.Event | None) -> JobResult:
        """Pass the job's messages to :meth:`_job_message` until it returns the result; cancel on ``cancel``."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Ask the daemon to stop the job; :meth:`wait` then raises DaemonJobError with code ``cancelled``."""

    @abstractmethod
    def send_estimate(self, request: Estimate) -> EstimateReply: ...

    @abstractmethod
    def status(self) -> StatusReply: ...

    @abstractmethod
    def close(self) -> None: ...


def submit_request(content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None, *,
                   regions: Sequence[Image | None] | None = None, style_masks: Sequence[Image | None] | None = None,
                   init: Image | None = None, warm_start: str | None = None, progress_every: int = 1,
                   preview_every: int = 0, output_size: tuple[int, int] | None = None,
                   result_dtype: DType = DType.F32, preview_max_side: int = 0, sequence: SequencePlan | None = None,
                   fault: str | None = None) -> tuple[Submit, list[Buffer]]:
    """A submit body and its binary parts.  ``regions``: one per style (None: everywhere), a 1-channel
    image of the content's size, white where that style applies in the output.  ``style_masks``: one
    per style (None: its alpha channel, if any, else all of it), a 1-channel image of that style's size,
    white where its statistics are taken.  The daemon checks them (sizes, channels, counts).
    ``output_size`` (width, height) has the daemon resize the result, e.g. back to the region the content
    came from; ``sequence`` makes ``content`` the first frame of an animation (see DaemonClient.stylize_sequence);
    ``fault`` is the tests' fault injection."""
    images = [(content, ImageEntry(ImageRole.CONTENT, content.spec))]
    images += [(style, ImageEntry(ImageRole.STYLE, style.spec)) for style in styles]
    for role, masks in ((ImageRole.REGION, regions), (ImageRole.STYLE_MASK, style_masks)):
        if masks is None:
            continue
        if len(masks) != len(styles):
            name = "regions" if role is ImageRole.REGION else "style_masks"
            raise DaemonJobError("invalid_request", f"{name} needs one mask (or None) per style image: "
                                 f"{len(styles)}, got {len(masks)}")
        images += [(mask, ImageEntry(role, mask.spec, index)) for index, mask in enumerate(masks) if mask is not None]
    if init is not None:
        images.append((init, ImageEntry(ImageRole.INIT, init.spec)))
    request = Submit(tuple(entry for _, entry in images), dict(settings or {}), progress_every=progress_every,
                     preview_every=preview_every, warm_start=warm_start,
                     output=None if output_size is None else (int(output_size[0]), int(output_size[1])),
                     result_dtype=DType(result_dtype), preview_max_side=preview_max_side, sequence=sequence,
                     fault=fault)
    return request, [image.data for image, _ in images]


def parse_reply(record: type[_R], body: object) -> _R:
    """The daemon's ``body`` read as ``record``; DaemonError where it is malformed."""
    try:
        if not isinstance(body, Mapping):
            raise invalid("the body is not a map")
        return record.from_wire(body)  # type: ignore[attr-defined]
    except ProtocolError as error:
        raise DaemonError(f"The daemon sent a malformed message: {error}") from None


def received_image(spec: ImageSpec, frames: Sequence[Buffer]) -> Image:
    """A result's or preview's one binary part, checked against its spec."""
    if len(frames) != 1 or memoryview(frames[0]).nbytes != spec.nbytes:
        raise DaemonError("The daemon sent an image whose size does not match its description.")
    return Image(spec, frames[0])
