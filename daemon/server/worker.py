"""A worker: the thread that owns one device's model and runs jobs on it, one at a time."""

from __future__ import annotations

import dataclasses
import enum
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from nst_engine import (
    CancelledError,
    Init,
    InsufficientMemoryError,
    InvalidSettingsError,
    Progress,
    StyleSettings,
    StyleTransfer,
    WeightsError,
)
from nst_engine.device import select_device
from nst_engine.geometry import fit_longest_side
from nst_engine.image_ops import resize
from nst_engine.memory import arithmetic_for, available_bytes
from nst_engine.planning import plan_job

from ..wire.messages import (
    Buffer,
    Error,
    ErrorCode,
    ImageRole,
    JobProgress,
    MessageType,
    Preview,
    Result,
    WireRecord,
)
from .caches import GramCache, ResultCache
from .estimates import EvaluationSpeed
from .images import fingerprint, frame_alpha, frame_to_mask, frame_to_rgb, rgb_to_frame
from .jobs import Job, JobImage, JobQueue, JobState

log = logging.getLogger(__name__)

class Outbox(Protocol):
    """Sends one message to a client (routing identity, type, body, frames); closed when the worker ends."""

    def __call__(self, client: bytes, message_type: MessageType, body: WireRecord,
                 frames: Sequence[Buffer]) -> None: ...

    def close(self) -> None: ...


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


class InjectedFault(RuntimeError):
    """Raised inside a job by the --test-faults hook."""


class Worker:
    """Runs queued jobs on the engine; loads the model at start unless ``lazy``."""

    def __init__(
        self,
        queue: JobQueue,
        send: Callable[[], Outbox],
        *,
        weights: Path | None,
        device: str | None,
        lazy: bool,
        gram_cache_bytes: int,
        memory_budget: int | None = None,
        test_faults: bool = False,
    ) -> None:
        self.queue = queue
        self._make_sender = send
        self.weights = weights
        self.device_preference = device
        self.lazy = lazy
        self.memory_budget = memory_budget
        self.test_faults = test_faults
        self.gram_cache = GramCache(gram_cache_bytes)
        self.results = ResultCache()
        self.model_state = ModelState.NOT_LOADED
        self.model_error: str | None = None
        self.engine: StyleTransfer | None = None
        self.running: Job | None = None
        self.jobs_done = 0
        self.speed = EvaluationSpeed()
        self._thread = threading.Thread(target=self._run, name="style-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def device(self) -> str:
        return str(self.memory_device())  # before the model loads: the device it will load on

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

    def _run(self) -> None:
        self._send = self._make_sender()  # sockets belong to the thread that made them
        try:
            if not self.lazy:
                try:
                    self._ensure_engine()
                except JobFailure:
                    pass  # reported to each job; the daemon keeps serving
            while (job := self.queue.take()) is not None:
                self._execute(job)
        finally:
            self._send.close()

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
        if job.cancel_token.cancelled:
            job.state = JobState.CANCELLED
            self._send(job.client, MessageType.ERROR, Error(ErrorCode.CANCELLED, "Job cancelled.", job_id=job.id), ())
            return
        job.state = JobState.RUNNING
        self.running = job
        failure: JobFailure | None = None
        out_of_memory = False
        try:
            result, frame = self._run_job(job)
            # Counted before the client has its result, so that a status it asks for next counts it.
            job.state = JobState.DONE
            self.jobs_done += 1
            self._send(job.client, MessageType.RESULT, result, [frame])
        except CancelledError:
            failure = JobFailure(ErrorCode.CANCELLED, "Job cancelled.")
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

    def _run_job(self, job: Job) -> tuple[Result, Buffer]:
        """The job's result, with its pixels."""
        engine = self._ensure_engine()
        settings = StyleSettings.from_values(job.settings)
        content = frame_to_rgb(job.content.spec, job.content.frame)
        style_images = job.styles
        styles = [frame_to_rgb(image.spec, image.frame) for image in style_images]
        regions = _masks(job.masks(ImageRole.REGION))
        # A style sent with alpha takes its statistics where it is opaque, unless a style mask is given.
        given = job.masks(ImageRole.STYLE_MASK) or [None] * len(styles)
        style_masks = [frame_to_mask(mask.spec, mask.frame) if mask is not None
                       else frame_alpha(image.spec, image.frame)
                       for image, mask in zip(style_images, given)]
        style_keys = [fingerprint(image.spec, image.frame) for image in style_images]
        init = job.init
        init_image = frame_to_rgb(init.spec, init.frame) if init is not None else None
        request = job.submit
        if request.warm_start is not None:
            init_image = self.results.get(_result_key(job.client, request.warm_start))
            if init_image is None:
                raise JobFailure(ErrorCode.INVALID_REQUEST,
                                 f"warm_start: no kept result of yours for job {request.warm_start}")
            settings = dataclasses.replace(settings, init=Init.IMAGE)

        def on_progress(progress: Progress) -> None:
            if self.test_faults and request.fault and progress.iteration == 2:
                if request.fault == "oom":
                    raise torch.cuda.OutOfMemoryError("injected out-of-memory error (--test-faults)")
                raise InjectedFault("injected failure (--test-faults)")
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
        result = engine.stylize(
            content, styles, settings, init_image=init_image, on_progress=on_progress,
            preview_every=request.preview_every, cancel=job.cancel_token, style_keys=style_keys,
            gram_cache=self.gram_cache, memory_budget=self.memory_budget,
            regions=regions, style_image_masks=None if all(mask is None for mask in style_masks) else style_masks,
        )
        self.results.put(_result_key(job.client, job.id), result)
        if job.output_size is not None:
            result = resize(result[None], *job.output_size)[0]
        spec, frame = rgb_to_frame(result, request.result_dtype)
        return Result(job.id, spec, time.perf_counter() - started), frame

    def _out_of_memory_failure(self, job: Job) -> JobFailure:
        self._release_memory(collect=True)
        settings = StyleSettings.from_values(job.settings)
        content = job.content.spec
        plan = plan_job(content.height, content.width, [], settings, settings.memory_budget(self.available_memory()),
                        arithmetic_for(settings.precision, self.memory_device()))
        # The engine tiles a stage that does not fit whole, so the size to suggest is the tiled planner's.
        refusal = plan.final.refusal
        if refusal is not None:
            largest = refusal.largest_size
        else:  # the plan said it fits, yet it did not: suggest less
            largest = max(1, max(plan.final.height, plan.final.width) * 3 // 4)
        return JobFailure(
            ErrorCode.OUT_OF_MEMORY,
            f"Out of memory on {self.device}; the largest size that should fit now is {largest} pixels "
            "on the longest side.",
            largest,
        )

    def _release_memory(self, collect: bool) -> None:
        """Return cached GPU blocks; a full garbage collection only after running out of memory, since
        it holds the interpreter for a noticeable time (about 130 ms here), delaying the next submit."""
        if collect:
            gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _result_key(client: bytes, job_id: str) -> str:
    """Kept results are found by their client and job id together: a job id alone, which other clients
    might learn, does not reach another client's result."""
    return f"{client.hex()}/{job_id}"


def progress_record(job_id: str, progress: Progress) -> JobProgress:
    """The engine's progress report as the wire's record."""
    losses = progress.losses
    return JobProgress(
        job_id=job_id, stage=progress.stage, stages=progress.stages, iteration=progress.iteration,
        total_iterations=progress.total_iterations, width=progress.width, height=progress.height,
        losses={"content": losses.content, "style": losses.style, "tv": losses.tv, "total": losses.total},
        elapsed_s=progress.elapsed_s, stage_iteration=progress.stage_iteration,
        stage_iterations=progress.stage_iterations,
    )


def _masks(images: list[JobImage | None] | None) -> list[torch.Tensor | None] | None:
    return None if images is None else [None if image is None else frame_to_mask(image.spec, image.frame)
                                        for image in images]
