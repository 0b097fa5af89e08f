"""Jobs and the bounded queue that feeds the workers (one per device)."""

from __future__ import annotations

import enum
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nst_engine import CancelToken

from ..wire.limits import SEQUENCE_FRAMES_AHEAD
from ..wire.messages import Buffer, Frame, ImageRole, ImageSpec, Submit
from .auth import LOCAL_USER
from .images import fingerprint


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Client:
    """Who sent a message, and so who owns a job: the connection's routing id, which the client chose, together
    with the user the transport authenticated (LOCAL_USER, or an invited client's public key).  Another key that
    takes over a routing id after its client left is another client: it owns nothing of the first."""

    routing_id: bytes
    user: str = LOCAL_USER


class JobImage(NamedTuple):
    spec: ImageSpec
    frame: Buffer


class FrameFeed:
    """A sequence job's frames after the first: the main loop puts each as it comes, the worker takes them in
    order.  A frame that does not fit (out of order, another size, its bytes, more than SEQUENCE_FRAMES_AHEAD
    ahead of the results) is refused: the job is cancelled and its worker ends it with ``refusal``."""

    def __init__(self, count: int, width: int, height: int) -> None:
        self.count, self.size = count, (width, height)
        self.received = 1  # the submit's content is frame 1
        self.results = 0  # results posted to the client (under ``lock``)
        self.refusal: str | None = None
        self._frames: deque[JobImage] = deque()
        self.lock = self._ready = threading.Condition()

    def put(self, request: Frame, parts: Sequence[Buffer], cancel: CancelToken) -> None:
        with self._ready:
            if self.refusal is not None:
                return
            self.refusal = self._problem(request, parts)
            if self.refusal is None:
                self._frames.append(JobImage(request.image, parts[0]))
                self.received += 1
            else:
                cancel.cancel()
            self._ready.notify_all()

    def _problem(self, request: Frame, parts: Sequence[Buffer]) -> str | None:
        spec, index = request.image, request.index
        if index != self.received + 1 or index > self.count:
            expected = "no more" if self.received == self.count else f"frame {self.received + 1}"
            return f"frame: frame {index} came, but {expected} was due (the sequence has {self.count} frames)"
        if (spec.width, spec.height) != self.size:
            return (f"frame {index} is {spec.width}×{spec.height} pixels, but the sequence's frames are "
                    f"{self.size[0]}×{self.size[1]}")
        if len(parts) != 1 or memoryview(parts[0]).nbytes != spec.nbytes:
            return f"frame {index}: one binary part of {spec.nbytes} bytes was expected"
        if self.received - self.results >= SEQUENCE_FRAMES_AHEAD:
            return (f"frame {index} came before the result of frame {self.results + 1}: at most "
                    f"{SEQUENCE_FRAMES_AHEAD} frames may wait for their results")
        return None

    def take(self, cancel: CancelToken) -> JobImage:
        """The next frame, waiting for it; CancelledError once the job is cancelled (or a frame refused)."""
        with self._ready:
            while not self._frames:
                cancel.raise_if_cancelled()
                self._ready.wait(0.1)
            return self._frames.popleft()


@dataclass
class Job:
    """A submitted job: its request as it came (checked), its images, and where it stands."""

    id: str
    client: Client  # its owner: only it may cancel, warm-start from or see it
    submit: Submit
    frames: list[Buffer]  # the binary parts, in the order of ``submit.images``
    output_size: tuple[int, int] | None = None  # (height, width) to resize the result to
    state: JobState = JobState.QUEUED
    cancel_token: CancelToken = field(default_factory=CancelToken)
    submitted_at: float = field(default_factory=time.monotonic)
    progress: dict[str, Any] | None = None
    cancelled_because: str = "Job cancelled."  # what its client is told when it ends cancelled
    feed: FrameFeed | None = None  # a sequence job's later frames

    @functools.cached_property
    def style_keys(self) -> list[str]:
        """Its style images' fingerprints (what a worker's style cache knows them by)."""
        return [fingerprint(*image) for image in self.styles]

    def _image(self, index: int) -> JobImage:
        return JobImage(self.submit.images[index].spec, self.frames[index])

    @property
    def live(self) -> bool:
        """Queued or running, and not cancelled yet."""
        return self.state in (JobState.QUEUED, JobState.RUNNING) and not self.cancel_token.cancelled

    @property
    def content(self) -> JobImage:
        return self._image(self.submit.indices(ImageRole.CONTENT)[0])

    @property
    def styles(self) -> list[JobImage]:
        return [self._image(index) for index in self.submit.indices(ImageRole.STYLE)]

    @property
    def init(self) -> JobImage | None:
        return next((self._image(index) for index in self.submit.indices(ImageRole.INIT)), None)

    def masks(self, role: ImageRole) -> list[JobImage | None] | None:
        """Per style, its mask of ``role`` (None: it has none), or None when no style has one."""
        found = self.submit.masks(role)
        return None if found is None else [None if index is None else self._image(index) for index in found]


class JobQueue:
    """FIFO of queued jobs with a capacity; the worker blocks in :meth:`take`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: deque[Job] = deque()
        self._condition = threading.Condition()
        self._closed = False
        # The workers waiting in take(), by their ``holds``: the jobs they are about to take do not wait.
        self._holders: list[Callable[[Job], bool] | None] = []

    def put(self, job: Job) -> int | None:
        """Queue ``job`` and return its position (0 = next), or None when ``capacity`` jobs would be left waiting.
        A job that an idle worker is about to take does not count, however soon the next submission arrives."""
        with self._condition:
            if len(self._jobs) - len(self._holders) >= self.capacity:
                return None
            self._jobs.append(job)
            self._condition.notify_all()  # each waiting worker sees whether another is preferred
            return len(self._jobs) - 1

    def take(self, holds: Callable[[Job], bool] | None = None) -> Job | None:
        """The next job, waiting for one; None once the queue is closed.  A worker whose ``holds`` says it has the
        job's style targets cached is preferred: another waiting worker leaves that job to it."""
        with self._condition:
            self._holders.append(holds)
            try:
                while not self._closed:
                    if self._jobs and self._for(holds, self._jobs[0]):
                        return self._jobs.popleft()
                    self._condition.wait()
                return None
            finally:
                self._holders.remove(holds)
                self._condition.notify_all()  # a job left to a preferred worker that went away

    def _for(self, holds: Callable[[Job], bool] | None, job: Job) -> bool:
        """Whether a waiting worker with ``holds`` takes ``job``: it holds the job's style, or no other waiting does."""
        if holds is not None and holds(job):
            return True
        return not any(other is not None and other is not holds and other(job) for other in self._holders)

    def remove(self, job_id: str) -> Job | None:
        with self._condition:
            for job in self._jobs:
                if job.id == job_id:
                    self._jobs.remove(job)
                    return job
        return None

    def snapshot(self) -> list[Job]:
        with self._condition:
            return list(self._jobs)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
