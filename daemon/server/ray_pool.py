"""Jobs on a Ray cluster (``daemon serve --ray ADDRESS``): one actor per worker, each a Ray worker process that
holds VGG19 and its style cache resident (a :class:`Worker` inside it, run job by job), and in the daemon one
thread per actor that takes jobs from the daemon's queue as a local worker does.  docs/scaling.md says how to run
it; the Ray cluster is the operator's trusted network (docs/security.md).

A job travels to its actor through Ray's object store; the actor streams the job's messages back (previews,
progress, then its result or error) as a streaming generator; a cancel is a second call on the actor (threaded, so
it runs beside the job) that sets the job's cancel token.  An actor whose process dies fails its running job with
one line and is restarted by Ray; the thread waits for it and goes on.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..wire.messages import Buffer, Error, ErrorCode, JobProgress, MessageType, Preview, WireRecord
from .devices import Outbox, ResultCache, Worker, precision_status, result_key
from .estimates import EvaluationSpeed
from .jobs import Client, Job, JobQueue, JobState

log = logging.getLogger(__name__)

RAY_MISSING = "--ray needs Ray in the daemon's environment; add it with: python3 install.py --ray"
_POLL_S = 0.1  # how often a waiting thread looks at its job's cancel token
_READY_TIMEOUT_S = 120.0  # for an actor to load its model at start or after a restart
_STYLES_REMEMBERED = 32
_PROBE_TIMEOUT_S = 5.0
_DEAD_RETRY_S = 5.0  # how long a job waits for a worker whose cluster did not answer last time


class RayUnavailableError(Exception):
    """Ray is not installed, or the cluster cannot be reached; the message says which and what to do."""


class ActorState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"


def connect(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (as ``ray.init`` takes it), shipping this
    project's packages to its workers; RayUnavailableError with one line otherwise."""
    if address in ("", "local"):  # ray.init would start a cluster of its own, bound to every interface
        raise RayUnavailableError(f"--ray {address!r}: give a running cluster's address (HOST:PORT, auto or "
                                  "ray://HOST:PORT); start one with ray start --head (docs/scaling.md)")
    # Ray ends a driver process that has lost its cluster for a minute; the daemon must go on serving (and say
    # so), so it waits for ever instead.  Read by ray.init.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(365 * 24 * 3600))
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(RAY_MISSING) from None
    _probe(address)
    root = Path(__file__).resolve().parents[2]
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"py_modules": [str(root / "daemon"), str(root / "nst_engine")]})
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError… by version
        raise RayUnavailableError(f"Cannot reach the Ray cluster at {address}: {error}".splitlines()[0]) from None
    return ray


def _probe(address: str) -> None:
    """Fail at once on a HOST:PORT nobody listens on: ray.init waits minutes for an unreachable cluster."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_TIMEOUT_S).close()
    except ValueError:
        raise RayUnavailableError(f"--ray {address}: give HOST:PORT, auto or ray://HOST:PORT") from None
    except OSError as error:
        raise RayUnavailableError(f"Cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


# -- inside the actor ------------------------------------------------------------------------------------------
class _JobStream:
    """Stands in for the Outbox inside an actor: the worker's messages, handed to the job's stream."""

    def __init__(self) -> None:
        self.messages: queue.Queue[tuple[MessageType, WireRecord, list[bytes]]] = queue.Queue()

    def __call__(self, client: Client, message_type: MessageType, body: WireRecord,
                 frames: Sequence[Buffer] = ()) -> None:
        self.messages.put((message_type, body, [bytes(memoryview(frame)) for frame in frames]))


class JobActor:
    """A Ray actor's state: a Worker with its engine, style cache and kept results (for warm starts)."""

    def __init__(self, weights: str | None, device: str | None, lazy: bool, gram_cache_bytes: int,
                 memory_budget: int | None, test_faults: bool) -> None:
        self.stream = _JobStream()
        self.worker = Worker(JobQueue(0), self.stream, weights=None if weights is None else Path(weights),
                             device=device, lazy=lazy, gram_cache_bytes=gram_cache_bytes,
                             memory_budget=memory_budget, test_faults=test_faults)
        self.jobs: dict[str, Job] = {}
        if not lazy:
            with contextlib.suppress(Exception):  # reported to each job, as a local worker does
                self.worker._ensure_engine()

    def describe(self, user: str | None = None) -> dict[str, Any]:
        import ray

        worker = self.worker
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "device": str(worker.memory_device()), "model": worker.model_state.value,
                "model_error": worker.model_error, "available_bytes": worker.available_memory(),
                "style_cache": worker.gram_cache.figures(user)}

    def run(self, travelling: tuple[Any, ...], warm_start: torch.Tensor | None):
        """A streaming generator: the job's messages, its outcome last, with the actor's state and, after a result,
        the result at full precision (the daemon keeps it for warm starts on any actor)."""
        job = Job(*travelling)
        if warm_start is not None:
            self.worker.results.put(result_key(job.client, job.submit.warm_start), warm_start)
        self.jobs[job.id] = job
        thread = threading.Thread(target=self.worker._execute, args=(job,), name=f"job-{job.id}")
        thread.start()
        try:
            while True:
                kind, body, frames = self.stream.messages.get()
                last = kind in (MessageType.RESULT, MessageType.ERROR)
                # With the outcome, the actor's state after the job: a status asked for next shows it.
                after = {user: self.describe(user) for user in (None, job.client.user)} if last else None
                if kind is MessageType.RESULT:
                    after["result"] = self.worker.results.get(result_key(job.client, job.id))
                yield kind, body, frames, after
                if last:
                    break
        finally:
            thread.join()
            del self.jobs[job.id]

    def cancel(self, job_id: str, because: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancelled_because = because
            job.cancel_token.cancel()


# -- in the daemon ---------------------------------------------------------------------------------------------
class _CacheFigures:
    """The actor's style-cache figures as last seen, in the shape of a local worker's GramCache.figures."""

    def __init__(self) -> None:
        self.by_user: dict[str | None, dict[str, int]] = {}

    def figures(self, user: str | None = None) -> dict[str, int]:
        return self.by_user.get(user, {"hits": 0, "misses": 0, "entries": 0, "bytes": 0})


class RayWorker(threading.Thread):
    """A daemon thread driving one actor; to the service it is a worker like the local ones."""

    def __init__(self, ray: Any, address: str, index: int, queue: JobQueue, send: Outbox, results: ResultCache,
                 actor_options: dict[str, Any], actor_arguments: tuple[Any, ...]) -> None:
        super().__init__(name=f"ray-worker-{index}", daemon=True)
        self.ray = ray
        self.address = address
        self.queue = queue
        self._send = send
        self.results = results  # the daemon's, shared by its actors
        self.actor = ray.remote(JobActor).options(**actor_options).remote(*actor_arguments)
        self.state = ActorState.STARTING
        self.described: dict[str, Any] = {}
        self.running: Job | None = None
        self.jobs_done = 0
        self.speed = EvaluationSpeed()
        self.gram_cache = _CacheFigures()
        self._styles: OrderedDict[str, None] = OrderedDict()  # style fingerprints of its recent jobs

    # -- what the service asks of a worker
    def available_memory(self) -> int:
        return int(self.described.get("available_bytes", 0))

    def memory_device(self) -> torch.device:
        device = torch.device(self.described.get("device", "cpu"))
        return device if device.type == "cpu" or torch.cuda.is_available() else torch.device("cpu")

    def device_status(self) -> dict[str, Any]:
        device = str(self.described.get("device", "unknown"))
        return {"device": device, "name": f"ray:{device}", "model": self.described.get("model", "not_loaded"),
                "model_error": self.described.get("model_error"), "precision": precision_status(self.memory_device()),
                "memory": {"available_bytes": self.available_memory()}}

    def ray_status(self, client: Client) -> dict[str, Any]:
        running = self.running
        return {"node": self.described.get("node"), "device": self.described.get("device"),
                "pid": self.described.get("pid"), "state": self.state.value,
                "running": None if running is None else (running.id if running.client == client else ""),
                "jobs_done": self.jobs_done}

    def holds(self, job: Job) -> bool:
        """Whether this actor has computed the job's style targets lately (a job prefers such an actor)."""
        return bool(job.style_keys) and all(key in self._styles for key in job.style_keys)

    # -- the thread
    def run(self) -> None:
        self._await_actor(_READY_TIMEOUT_S)
        while (job := self.queue.take(self.holds)) is not None:
            if self.state is ActorState.DEAD:  # the cluster did not answer last time: try it again
                self._await_actor(_DEAD_RETRY_S)
            if self.state is ActorState.READY:
                self._execute(job)
                if self.state is ActorState.STARTING:  # its process died during the job: Ray starts it again
                    self._await_actor(_READY_TIMEOUT_S)
            else:
                job.state = JobState.FAILED
                self._send(job.client, MessageType.ERROR, Error(
                    ErrorCode.INTERNAL, f"The Ray cluster at {self.address} does not answer; its operator must "
                    "start it again (python -m daemon status shows its workers).", job_id=job.id))

    def _await_actor(self, patience_s: float) -> None:
        """Until the actor answers (it loads its model first unless lazy), for at most ``patience_s``: READY, else
        DEAD."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.described = self.ray.get(self.actor.describe.remote(),
                                              timeout=max(1.0, deadline - time.monotonic()))
            except Exception as error:  # restarting, or the cluster is gone
                if time.monotonic() < deadline and not self.queue.closed:
                    time.sleep(1.0)
                    continue
                if self.state is not ActorState.DEAD:
                    log.error("Ray worker %s does not answer (%s)", self.name, _one_line(error))
                self.state = ActorState.DEAD
                return
            self.state = ActorState.READY
            log.info("Ray worker %s ready: pid %s on node %s, %s", self.name, self.described["pid"],
                     str(self.described["node"])[:12], self.described["device"])
            return

    def _execute(self, job: Job) -> None:
        job.state = JobState.RUNNING
        self.running = job
        outcome: MessageType | None = None
        try:
            job.cancel_token.raise_if_cancelled()
            if job.feed is not None:
                self._send(job.client, MessageType.ERROR, Error(
                    ErrorCode.INVALID_REQUEST, "Animations do not run on a Ray cluster yet: stylise the frames on a "
                    "daemon with local devices.", job_id=job.id))
                job.state = JobState.FAILED
                return
            warm_start = job.submit.warm_start
            start_image = None if warm_start is None else self.results.get(result_key(job.client, warm_start))
            outcome = self._follow(job, self.actor.run.remote(_travelling(job), start_image))
        except Exception as error:
            if job.cancel_token.cancelled:
                self._send(job.client, MessageType.ERROR, Error(ErrorCode.CANCELLED, job.cancelled_because,
                                                                 job_id=job.id))
                outcome = MessageType.ERROR
            else:
                self.state = ActorState.STARTING  # Ray restarts it
                pid, node = self.described.get("pid"), str(self.described.get("node"))[:12]
                log.error("Job %s: Ray worker %s (pid %s) lost: %s", job.id, self.name, pid, _one_line(error))
                self._send(job.client, MessageType.ERROR, Error(
                    ErrorCode.INTERNAL, f"The Ray worker running this job (pid {pid} on node {node}) ended during "
                    "it; try again.", job_id=job.id))
                outcome = MessageType.ERROR
        finally:
            self.running = None
        if outcome is MessageType.RESULT:
            job.state = JobState.DONE
            for key in job.style_keys:
                self._styles[key] = None
                self._styles.move_to_end(key)
            while len(self._styles) > _STYLES_REMEMBERED:
                self._styles.popitem(last=False)
        elif job.state is JobState.RUNNING:
            job.state = JobState.CANCELLED if job.cancel_token.cancelled else JobState.FAILED

    def _follow(self, job: Job, stream: Any) -> MessageType | None:
        """Pass the job's messages on to its client until its result or error; cancel it on the actor if asked."""
        cancel_sent = False
        while True:
            if job.cancel_token.cancelled and not cancel_sent:
                self.actor.cancel.remote(job.id, job.cancelled_because)
                cancel_sent = True
            ready, _ = self.ray.wait([stream], timeout=_POLL_S)
            if not ready:
                continue
            try:
                reference = next(stream)
            except StopIteration:
                return None
            kind, body, frames, after = self.ray.get(reference)
            if after is not None:
                if (result := after.pop("result", None)) is not None:
                    self.results.put(result_key(job.client, job.id), result)
                self.described = after[None]
                self.gram_cache.by_user.update({user: described["style_cache"] for user, described in after.items()})
            if kind is MessageType.RESULT:
                self.jobs_done += 1  # before the client has it, as a local worker counts
            elif kind in (MessageType.PROGRESS, MessageType.PREVIEW):
                record: JobProgress = body.progress if isinstance(body, Preview) else body
                job.progress = record.to_wire()
                self.speed.observe(job.id, record)
            self._send(job.client, kind, body, frames)
            if kind in (MessageType.RESULT, MessageType.ERROR):
                if kind is MessageType.ERROR and isinstance(body, Error) and body.code is ErrorCode.CANCELLED:
                    job.state = JobState.CANCELLED
                elif kind is MessageType.ERROR:
                    job.state = JobState.FAILED
                return kind


def _travelling(job: Job) -> tuple[Any, ...]:
    """What the actor makes its Job of (a cancel token of its own): the frames as bytes, through the object store."""
    return job.id, job.client, job.submit, [bytes(memoryview(frame)) for frame in job.frames], job.output_size


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def ray_workers(address: str, count: int, queue: JobQueue, send: Outbox, results: ResultCache, *,
                weights: Path | None,
                device: str | None, lazy: bool, gram_cache_bytes: int, memory_budget: int | None,
                test_faults: bool) -> list[RayWorker]:
    """``count`` actors on the cluster at ``address``: one GPU each where the cluster has GPUs, else one CPU."""
    ray = connect(address)
    gpus = ray.cluster_resources().get("GPU", 0)
    options: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0, "max_concurrency": 2}
    options.update({"num_gpus": 1} if gpus >= 1 else {"num_cpus": 1})
    arguments = (None if weights is None else str(weights), device, lazy, gram_cache_bytes, memory_budget,
                 test_faults)
    return [RayWorker(ray, address, index, queue, send, results, options, arguments) for index in range(count)]

