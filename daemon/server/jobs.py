"""Jobs and the bounded queue that feeds the workers (one per device)."""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nst_engine import CancelToken

from ..wire.messages import Buffer, ImageRole, ImageSpec, Submit
from .auth import LOCAL_USER


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
        self._takers = 0  # workers waiting in take(): the jobs they are about to take do not wait

    def put(self, job: Job) -> int | None:
        """Queue ``job`` and return its position (0 = next), or None when ``capacity`` jobs would be left waiting.
        A job that an idle worker is about to take does not count, however soon the next submission arrives."""
        with self._condition:
            if len(self._jobs) - self._takers >= self.capacity:
                return None
            self._jobs.append(job)
            self._condition.notify()
            return len(self._jobs) - 1

    def take(self) -> Job | None:
        """The next job, waiting for one; None once the queue is closed."""
        with self._condition:
            self._takers += 1
            try:
                while not self._jobs and not self._closed:
                    self._condition.wait()
            finally:
                self._takers -= 1
            if self._closed:
                return None
            return self._jobs.popleft()

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

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
