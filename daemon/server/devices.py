"""A worker per device, what it keeps between jobs, and each device's status.  A worker is a thread with its own
resident VGG and style cache; all take jobs from the one queue, so that each job goes to the first free device.
A job's failure stays that job's: each worker catches its own, and the other devices go on."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import gc
import itertools
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Hashable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import zmq

from nst_engine import (
    CancelledError,
    Init,
    InsufficientMemoryError,
    InvalidSettingsError,
    Optimizer,
    Precision,
    Progress,
    StyleSettings,
    StyleTransfer,
    WeightsError,
    stylize_sequence,
)
from nst_engine.device import choose_precision, select_device
from nst_engine.geometry import fit_longest_side
from nst_engine.image_ops import resize
from nst_engine.memory import arithmetic_for, available_bytes, largest_fitting_side
from nst_engine.planning import plan_job
from nst_engine.tiling import largest_runnable_side

from ..wire.framing import Codec
from ..wire.messages import Buffer, Error, ErrorCode, ImageRole, JobProgress, MessageType, Preview, Result, WireRecord
from .auth import LOCAL_USER
from .estimates import EvaluationSpeed
from .images import fingerprint, frame_alpha, frame_to_mask, frame_to_rgb, rgb_to_frame
from .jobs import Client, Job, JobImage, JobQueue, JobState

log = logging.getLogger(__name__)
_SLOW_FAULT_S = 0.5  # per iteration, for fault "slow": a job that runs for long enough on any machine

ROUTER_SEND_HWM = 2  # messages libzmq holds per connection; the rest wait in the Outbox
REPLY_BYTES = 2**20  # replies to requests (not a job's messages) waiting per connection; more are dropped
PREVIEW_WAIT_S = 1.0


@dataclass
class _Unsent:
    kind: MessageType
    job_id: str | None
    frames: list[Buffer]  # encoded, without the routing id
    nbytes: int


class Outbox:
    """Messages to clients.  Any thread posts them; the main loop hands them to the ROUTER, whose SNDHWM keeps what
    libzmq holds per connection to ROUTER_SEND_HWM messages.  The rest waits here, per client: while its connection
    is full (the client is not reading), a job's newer preview or progress report replaces its unsent one (only the
    newest is worth having); a job's other messages (accepted, result, error) are kept; replies to requests beyond
    REPLY_BYTES are dropped (a client that does not read them asks again).  A worker posting a preview waits for
    its job's previous one to be sent, or the connection to be full, up to PREVIEW_WAIT_S, then replaces it: one
    unsent preview per job, whatever the main loop's pace.  A message goes to a routing id only while the
    connection there is its client's: nothing more after that connection closed, or after another user's
    connection took the id."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._queues: dict[Client, deque[_Unsent]] = {}
        self._users: dict[bytes, str] = {}  # routing id → the user of the connection that has it
        self._full: set[Client] = set()  # whose connection took no more at the last try
        self._changed = threading.Condition()  # notified after each sending
        self.wakeup, self._wake = socket.socketpair()  # the main loop polls ``wakeup``; posts write to the other end
        self.wakeup.setblocking(False)
        self._wake.setblocking(False)

    def __call__(self, client: Client, message_type: MessageType, body: WireRecord,
                 frames: Sequence[Buffer] = ()) -> None:
        encoded = self.codec.encode(message_type, body.to_wire(), frames)
        job_id = body.progress.job_id if isinstance(body, Preview) else getattr(body, "job_id", None)
        unsent = _Unsent(message_type, job_id, encoded, sum(memoryview(part).nbytes for part in encoded))
        with self._changed:
            if message_type is MessageType.PREVIEW:
                self._changed.wait_for(lambda: client in self._full or self._older(client, unsent) is None,
                                       PREVIEW_WAIT_S)
            queue = self._queues.setdefault(client, deque())
            index = self._older(client, unsent)
            if index is not None and (client in self._full or message_type is MessageType.PREVIEW):
                queue[index] = unsent
            elif job_id is not None or sum(m.nbytes for m in queue if m.job_id is None) + unsent.nbytes <= REPLY_BYTES:
                queue.append(unsent)
        with contextlib.suppress(BlockingIOError):  # full: the main loop has wake-ups to read already
            self._wake.send(b"\0")

    def _older(self, client: Client, unsent: _Unsent) -> int | None:
        """Where an unsent preview or progress report of the same job waits, if one does."""
        if unsent.job_id is None or unsent.kind not in (MessageType.PREVIEW, MessageType.PROGRESS):
            return None
        return next((index for index, waiting in enumerate(self._queues.get(client, ()))
                     if (waiting.kind, waiting.job_id) == (unsent.kind, unsent.job_id)), None)

    def connected(self, client: Client) -> None:
        """``client`` sent a message: its connection has that routing id now."""
        with self._changed:
            self._users[client.routing_id] = client.user

    def disconnected(self, routing_id: bytes) -> None:
        with self._changed:
            self._users.pop(routing_id, None)

    def unread_results(self, user: str) -> int:
        """Results and errors of ``user``'s jobs that wait here, on all its connections."""
        with self._changed:
            return sum(message.kind in (MessageType.RESULT, MessageType.ERROR) and message.job_id is not None
                       for client, queue in self._queues.items() if client.user == user for message in queue)

    def send(self, router: zmq.Socket) -> bool:
        """Give libzmq what each connection takes (the main loop's thread); True while some wait for room."""
        with contextlib.suppress(BlockingIOError):
            while self.wakeup.recv(4096):
                pass
        with self._changed:
            self._full.clear()
            for client, queue in list(self._queues.items()):
                while queue and self._users.get(client.routing_id) == client.user:
                    try:
                        router.send_multipart([client.routing_id, *queue[0].frames], zmq.NOBLOCK, copy=False)
                    except zmq.Again:  # its SNDHWM is reached: it is not reading
                        self._full.add(client)
                        break
                    except zmq.ZMQError:  # no connection has that routing id (ROUTER_MANDATORY)
                        self._users.pop(client.routing_id, None)
                        break
                    queue.popleft()
                if not queue or self._users.get(client.routing_id) != client.user:
                    del self._queues[client]
            self._changed.notify_all()
            return bool(self._full)

    def close(self) -> None:
        self.wakeup.close()
        self._wake.close()


class ModelState(str, enum.Enum):
    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass
class JobFailure(Exception):
    code: ErrorCode
    message: str
    largest_size: int | None = None


class Worker(threading.Thread):
    """Runs queued jobs on the engine; loads the model at start unless ``lazy``."""

    def __init__(self, queue: JobQueue, send: Outbox, *, weights: Path | None, device: str | None,
                 lazy: bool, gram_cache_bytes: int, memory_budget: int | None = None, test_faults: bool = False,
                 results: ResultCache | None = None) -> None:
        super().__init__(name="style-worker", daemon=True)
        self.queue = queue
        self._send = send
        self.weights = weights
        self.device_preference = device
        self.lazy = lazy
        self.memory_budget = memory_budget
        self.test_faults = test_faults
        self.gram_cache = GramCache(gram_cache_bytes)
        self.results = ResultCache() if results is None else results  # kept results, for warm starts
        self.model_state = ModelState.NOT_LOADED
        self.model_error: str | None = None
        self.engine: StyleTransfer | None = None
        self.running: Job | None = None
        self.jobs_done = 0
        self.speed = EvaluationSpeed()

    def available_memory(self) -> int:
        """Bytes a job may use now: the configured budget, else what its device has free."""
        return self.memory_budget or available_bytes(self.memory_device())

    def memory_device(self) -> torch.device:
        """Where jobs' memory is allocated: the engine's device, or until the model is loaded, the one it will use."""
        if self.engine is not None:
            return self.engine.device
        try:
            return select_device(self.device_preference)
        except InvalidSettingsError:
            return torch.device("cpu")

    def device_status(self) -> dict[str, Any]:
        device = self.memory_device()  # before the model loads: the device it will load on
        memory: dict[str, int] = {"available_bytes": self.available_memory()}
        if device.type == "cuda":
            memory["total_bytes"] = torch.cuda.get_device_properties(device).total_memory
            memory["allocated_bytes"] = torch.cuda.memory_allocated(device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        return {"device": str(device), "name": name,
                "model": self.model_state.value, "model_error": self.model_error, "precision": precision_status(device),
                "memory": memory}

    def run(self) -> None:
        if not self.lazy:
            with contextlib.suppress(JobFailure):  # reported to each job; the daemon keeps serving
                self._ensure_engine()
        while (job := self.queue.take()) is not None:
            self._execute(job)

    def _ensure_engine(self) -> StyleTransfer:
        if self.engine is not None:
            return self.engine
        self.model_state = ModelState.LOADING
        try:
            started = time.perf_counter()
            self.engine = StyleTransfer.from_weights(self.weights, self.device_preference)
        except WeightsError as error:
            self.model_state, self.model_error = ModelState.FAILED, str(error)
            log.error("Cannot load VGG19: %s", error)
            raise JobFailure(ErrorCode.WEIGHTS_UNAVAILABLE, str(error)) from error
        self.model_state, self.model_error = ModelState.LOADED, None
        log.info("VGG19 loaded on %s in %.1f s", self.engine.device, time.perf_counter() - started)
        return self.engine

    def _execute(self, job: Job) -> None:
        job.state = JobState.RUNNING
        self.running = job
        failure: JobFailure | None = None
        out_of_memory = False
        try:
            job.cancel_token.raise_if_cancelled()  # cancelled while it waited
            for result, frame in self._run_job(job):
                if job.feed is None or result.frame == job.feed.count:
                    # Counted before the client has its result, so that a status it asks for next counts it.
                    job.state = JobState.DONE
                    self.jobs_done += 1
                self._send(job.client, MessageType.RESULT, result, [frame])
        except CancelledError:
            refusal = job.feed.refusal if job.feed is not None else None
            failure = JobFailure(ErrorCode.CANCELLED, job.cancelled_because) if refusal is None else \
                JobFailure(ErrorCode.INVALID_REQUEST, refusal)
        except InsufficientMemoryError as error:
            failure = JobFailure(ErrorCode.OUT_OF_MEMORY, str(error), error.largest_size)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # handled below, once the traceback's tensors are released
        except JobFailure as error:
            failure = error
        except InvalidSettingsError as error:
            failure = JobFailure(ErrorCode.INVALID_REQUEST, str(error))
        except Exception as error:
            log.exception("Job %s failed", job.id)
            failure = JobFailure(ErrorCode.INTERNAL, f"Internal error: {type(error).__name__}: {error}")
        finally:
            self.running = None
        if out_of_memory:
            failure = self._out_of_memory_failure(job)
        else:
            self._release_memory(collect=False)
        if failure is not None:
            job.state = JobState.CANCELLED if failure.code is ErrorCode.CANCELLED else JobState.FAILED
            error = Error(failure.code, failure.message, job_id=job.id, largest_size=failure.largest_size)
            self._send(job.client, MessageType.ERROR, error, ())

    def _run_job(self, job: Job) -> Iterator[tuple[Result, Buffer]]:
        """The job's result, with its pixels; a sequence job's, one per frame as each is done."""
        engine = self._ensure_engine()
        request = job.submit
        settings = StyleSettings.from_values(request.settings)
        content = frame_to_rgb(*job.content)
        style_images = job.styles
        styles = [frame_to_rgb(*image) for image in style_images]
        regions = _masks(job.masks(ImageRole.REGION))
        # A style sent with alpha takes its statistics where it is opaque, unless a style mask is given.
        given = job.masks(ImageRole.STYLE_MASK) or [None] * len(styles)
        style_masks = [frame_alpha(*image) if mask is None else frame_to_mask(*mask)
                       for image, mask in zip(style_images, given)]
        style_keys = [fingerprint(*image) for image in style_images]
        init_image = None if job.init is None else frame_to_rgb(*job.init)
        if request.warm_start is not None:
            init_image = self.results.get(result_key(job.client, request.warm_start))
            if init_image is None:
                raise JobFailure(ErrorCode.INVALID_REQUEST,
                                 f"warm_start: no kept result of yours for job {request.warm_start}")
            settings = dataclasses.replace(settings, init=Init.IMAGE)

        def on_progress(progress: Progress) -> None:
            if self.test_faults and request.fault == "slow":
                time.sleep(_SLOW_FAULT_S)
            elif self.test_faults and request.fault and progress.iteration == 2:
                if request.fault == "oom":
                    raise torch.cuda.OutOfMemoryError("injected out-of-memory error (--test-faults)")
                raise RuntimeError("injected failure (--test-faults)")
            record = progress_record(job.id, progress)
            job.progress = record.to_wire()
            self.speed.observe(job.id, progress)
            if request.preview_every and progress.image is not None:
                preview = progress.image
                size = job.output_size or tuple(preview.shape[-2:])
                if request.preview_max_side and max(size) > request.preview_max_side:
                    size = fit_longest_side(*size, request.preview_max_side)
                if size != tuple(preview.shape[-2:]):
                    preview = resize(preview[None], *size)[0]
                spec, frame = rgb_to_frame(preview, request.result_dtype)
                self._send(job.client, MessageType.PREVIEW, Preview(record, spec), [frame])
            elif (progress.stage_iteration % request.progress_every == 0
                  or progress.stage_iteration == progress.stage_iterations):
                self._send(job.client, MessageType.PROGRESS, record, ())

        started = time.perf_counter()
        log.debug("Job %s: %.1f ms from submission to the engine", job.id, 1000 * (time.monotonic() - job.submitted_at))
        common: dict[str, Any] = {
            "on_progress": on_progress, "preview_every": request.preview_every, "cancel": job.cancel_token,
            "style_keys": style_keys, "gram_cache": self.gram_cache.of(job.client.user),
            "memory_budget": self.memory_budget,
            "style_image_masks": None if all(mask is None for mask in style_masks) else style_masks}
        if job.feed is None:
            result = engine.stylize(content, styles, settings, init_image=init_image, regions=regions, **common)
            self.results.put(result_key(job.client, job.id), result)
            yield self._result(job, result, None, started)
            return
        feed, plan = job.feed, request.sequence
        assert plan is not None
        later = (frame_to_rgb(*feed.take(job.cancel_token)) for _ in range(plan.frames - 1))
        results = stylize_sequence(engine, itertools.chain([content], later), styles, settings,
                                   temporal_weight=plan.temporal_weight, frame_iterations=plan.frame_iterations,
                                   frame_count=plan.frames, **common)
        for number, result in enumerate(results, start=1):
            with feed.lock:  # counted before the client can have it, and so send the frame after next
                feed.results += 1
            yield self._result(job, result, number, started)

    @staticmethod
    def _result(job: Job, result: torch.Tensor, frame: int | None, started: float) -> tuple[Result, Buffer]:
        if job.output_size is not None:
            result = resize(result[None], *job.output_size)[0]
        spec, pixels = rgb_to_frame(result, job.submit.result_dtype)
        return Result(job.id, spec, time.perf_counter() - started, frame), pixels

    def _out_of_memory_failure(self, job: Job) -> JobFailure:
        self._release_memory(collect=True)
        settings = StyleSettings.from_values(job.submit.settings)
        content = job.content.spec
        plan = plan_job(content.height, content.width, [], settings, settings.memory_budget(self.available_memory()),
                        arithmetic_for(settings.precision, self.memory_device()))
        # The engine tiles a stage that does not fit whole, so the size to suggest is the tiled planner's.
        refusal = plan.final.refusal
        if refusal is not None:
            largest = refusal.largest_size
        else:  # the plan said it fits, yet it did not: suggest less
            largest = max(1, max(plan.final.height, plan.final.width) * 3 // 4)
        return JobFailure(ErrorCode.OUT_OF_MEMORY, f"Out of memory on {self.memory_device()}; the largest size that "
                          f"should fit now is {largest} pixels on the longest side.", largest)

    def _release_memory(self, collect: bool) -> None:
        """Return cached GPU blocks; a full garbage collection only after running out of memory, since
        it holds the interpreter for a noticeable time (about 130 ms here), delaying the next submit."""
        if collect:
            gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def result_key(client: Client, job_id: str) -> str:
    """Keyed by client too: a job id alone, which other clients might learn, reaches no other client's result."""
    return f"{client.user}/{client.routing_id.hex()}/{job_id}"


def progress_record(job_id: str, progress: Progress) -> JobProgress:
    """The engine's progress report as the wire's record."""
    losses = progress.losses
    return JobProgress(
        job_id=job_id, stage=progress.stage, stages=progress.stages, iteration=progress.iteration,
        total_iterations=progress.total_iterations, width=progress.width, height=progress.height,
        losses={"content": losses.content, "style": losses.style, "tv": losses.tv, "total": losses.total},
        elapsed_s=progress.elapsed_s, stage_iteration=progress.stage_iteration,
        stage_iterations=progress.stage_iterations, frame=progress.frame, frames=progress.frames)


def _masks(images: list[JobImage | None] | None) -> list[torch.Tensor | None] | None:
    return None if images is None else [None if image is None else frame_to_mask(*image) for image in images]


class _UserKey(NamedTuple):
    user: str
    key: Hashable


class GramCache(MutableMapping[Hashable, dict[str, torch.Tensor]]):
    """LRU map of Gram targets, evicting the least recently used entries beyond ``max_bytes``.  Jobs see it through
    their user's view (:meth:`of`), so that neither a hit nor status tells one client which styles another used."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._lookups: Counter[tuple[str, bool]] = Counter()  # (user, found) through the users' views
        self._entries: OrderedDict[Hashable, dict[str, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(grams: dict[str, torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in grams.values())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            found = key in self._entries
            if found:
                self.hits += 1
            else:
                self.misses += 1
            if isinstance(key, _UserKey):
                self._lookups[key.user, found] += 1
            return found

    def __getitem__(self, key: Hashable) -> dict[str, torch.Tensor]:
        with self._lock:
            self._entries.move_to_end(key)
            return self._entries[key]

    def __setitem__(self, key: Hashable, grams: dict[str, torch.Tensor]) -> None:
        with self._lock:
            if key in self._entries:
                self._bytes -= self._size(self._entries.pop(key))
            self._entries[key] = grams
            self._bytes += self._size(grams)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= self._size(evicted)

    def __delitem__(self, key: Hashable) -> None:
        with self._lock:
            self._bytes -= self._size(self._entries.pop(key))

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def of(self, user: str) -> _UserGrams:
        return _UserGrams(self, user)

    def figures(self, user: str | None = None) -> dict[str, int]:
        """``{hits, misses, entries, bytes}``: of all entries, or of ``user``'s view only."""
        with self._lock:
            if user is None:
                return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries), "bytes": self._bytes}
            own = [grams for key, grams in self._entries.items() if isinstance(key, _UserKey) and key.user == user]
            return {"hits": self._lookups[user, True], "misses": self._lookups[user, False], "entries": len(own),
                    "bytes": sum(map(self._size, own))}


class _UserGrams(MutableMapping[Hashable, dict[str, torch.Tensor]]):
    """One user's part of a GramCache: its keys carry the user, so that a job finds only what its user's jobs
    computed.  The byte budget stays shared."""

    def __init__(self, cache: GramCache, user: str) -> None:
        self._cache, self._user = cache, user

    def __contains__(self, key: object) -> bool:
        return _UserKey(self._user, key) in self._cache  # type: ignore[arg-type]

    def __getitem__(self, key: Hashable) -> dict[str, torch.Tensor]:
        return self._cache[_UserKey(self._user, key)]

    def __setitem__(self, key: Hashable, grams: dict[str, torch.Tensor]) -> None:
        self._cache[_UserKey(self._user, key)] = grams

    def __delitem__(self, key: Hashable) -> None:
        del self._cache[_UserKey(self._user, key)]

    def __iter__(self) -> Iterator[Hashable]:
        return (key.key for key in self._cache if isinstance(key, _UserKey) and key.user == self._user)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ResultCache:
    """The last few results by job id, on the CPU, for warm starts."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, image: torch.Tensor) -> None:
        with self._lock:
            self._entries[job_id] = image
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, job_id: str) -> torch.Tensor | None:
        with self._lock:
            return self._entries.get(job_id)

    def __len__(self) -> int:
        return len(self._entries)


def worker_status(index: int, worker: Worker, client: Client) -> dict[str, Any]:
    """One device's entry of the status reply, as ``client`` may see it (docs/protocol.md); a worker's
    ``device_status()`` gives what depends on where it runs."""
    running = worker.running
    return {
        "index": index, **worker.device_status(), "jobs_done": worker.jobs_done,
        "style_cache_entries": worker.gram_cache.figures(None if client.user == LOCAL_USER else client.user)["entries"],
        "running": None if running is None else (  # another client's job is counted, not named
            {"job_id": running.id, "progress": running.progress} if running.client == client
            else {"job_id": None, "progress": None}),
    }


def memory_status(available: int, device: torch.device) -> dict[str, Any]:
    """The process's memory, and by the engine's memory model the largest square image a new job (default layers,
    ``auto`` precision) can take now on ``device``: at all (in tiles where needed), and whole (faster)."""
    memory: dict[str, Any] = {"rss_bytes": _rss_bytes(), "available_bytes": available}
    if torch.cuda.is_available():  # every GPU's together (``devices`` has each one's)
        gpus = range(torch.cuda.device_count())
        memory["cuda_allocated_bytes"] = sum(torch.cuda.memory_allocated(gpu) for gpu in gpus)
        memory["cuda_max_allocated_bytes"] = sum(torch.cuda.max_memory_allocated(gpu) for gpu in gpus)
    defaults = {optimizer.value: StyleSettings(optimizer=optimizer) for optimizer in Optimizer}
    arithmetic = arithmetic_for(Precision.AUTO, device)
    memory["largest_size"] = {name: largest_runnable_side(available, settings, arithmetic=arithmetic)
                              for name, settings in defaults.items()}
    memory["largest_whole_size"] = {
        name: largest_fitting_side(available, settings.layers, settings.style_layers, settings.optimizer, arithmetic)
        for name, settings in defaults.items()}
    return memory


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def precision_status(device: torch.device) -> dict[str, str]:
    """What a job's ``auto`` precision runs in on ``device``, and why."""
    choice = choose_precision(Precision.AUTO, device)
    return {"auto": choice.precision.value, "reason": choice.reason}


def resolve_devices(devices: str | None, device: str | None, cuda_count: int) -> list[str | None]:
    """The devices to run workers on: ``--devices a,b`` as given, else ``--device`` alone, else every
    visible GPU when there are several, else one worker on the automatic choice (None: GPU, MPS or CPU)."""
    if devices:
        chosen = [part.strip() for part in devices.split(",")]
        if not all(chosen):
            raise ValueError(f"--devices {devices!r}: an empty device name")
        return chosen
    if device:
        return [device]
    if cuda_count > 1:
        return [f"cuda:{index}" for index in range(cuda_count)]
    return [None]
