"""Several devices: one worker per device, each with its own resident VGG and style cache, all taking
jobs from the one queue, so that each job goes to the first free device.

Kept results are shared (a warm start may run on another device than the job it starts from).  A
job's failure stays that job's: each worker catches its own, and the other devices go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nst_engine import Precision
from nst_engine.device import choose_precision

from .caches import ResultCache
from .jobs import Job, JobQueue
from .worker import Outbox, Worker


def resolve_devices(devices: str | None, device: str | None, cuda_count: int) -> list[str | None]:
    """The devices to run workers on: ``--devices a,b`` as given, else ``--device`` alone, else every
    visible GPU when there are several, else one worker on the automatic choice (None: GPU, MPS or CPU)."""
    if devices:
        chosen = [part.strip() for part in devices.split(",")]
        if not all(chosen):
            raise ValueError(f"--devices {devices!r}: an empty device name")
        return list(chosen)
    if device:
        return [device]
    if cuda_count > 1:
        return [f"cuda:{index}" for index in range(cuda_count)]
    return [None]


class WorkerPool:
    """The workers of one daemon, one per device, sharing the queue and the kept results."""

    def __init__(self, queue: JobQueue, send: Callable[[], Outbox], devices: Sequence[str | None], *,
                 weights: Path | None, lazy: bool, gram_cache_bytes: int, memory_budget: int | None = None,
                 test_faults: bool = False) -> None:
        if not devices:
            raise ValueError("a worker pool needs at least one device")
        self.workers = [
            Worker(queue, send, weights=weights, device=device, lazy=lazy, gram_cache_bytes=gram_cache_bytes,
                   memory_budget=memory_budget, test_faults=test_faults)
            for device in devices
        ]
        self.results = ResultCache()
        for worker in self.workers:
            worker.results = self.results

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def join(self, timeout: float) -> None:
        for worker in self.workers:
            worker.join(timeout)

    def running_jobs(self) -> list[Job]:
        return [job for worker in self.workers if (job := worker.running) is not None]

    def is_running(self, job: Job) -> bool:
        return any(job is running for running in self.running_jobs())

    def next_worker(self) -> Worker:
        """The worker a job submitted now would go to: the first idle one (else the first), whose device,
        memory and measured speed an estimate is for."""
        return next((worker for worker in self.workers if worker.running is None), self.workers[0])

    @property
    def jobs_done(self) -> int:
        return sum(worker.jobs_done for worker in self.workers)

    def style_cache_status(self) -> dict[str, int]:
        caches = [worker.gram_cache for worker in self.workers]
        return {"hits": sum(cache.hits for cache in caches), "misses": sum(cache.misses for cache in caches),
                "entries": sum(len(cache) for cache in caches), "bytes": sum(cache.nbytes for cache in caches)}

    def device_status(self, client: bytes | None) -> list[dict[str, Any]]:
        """Each device: its name, model, precision, memory, the job it runs (its id only for its own
        client), jobs done."""
        return [_worker_status(index, worker, client) for index, worker in enumerate(self.workers)]


def _worker_status(index: int, worker: Worker, client: bytes | None) -> dict[str, Any]:
    device = worker.memory_device()
    name = str(device)
    memory: dict[str, int] = {"available_bytes": worker.available_memory()}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory["total_bytes"] = torch.cuda.get_device_properties(device).total_memory
        memory["allocated_bytes"] = torch.cuda.memory_allocated(device)
    running = worker.running
    return {
        "index": index,
        "device": worker.device,
        "name": name,
        "model": worker.model_state.value,
        "model_error": worker.model_error,
        "precision": precision_status(device),
        "memory": memory,
        "running": None if running is None else (
            {"job_id": running.id, "progress": running.progress} if running.client == client
            else {"job_id": None, "progress": None}),
        "jobs_done": worker.jobs_done,
        "style_cache_entries": len(worker.gram_cache),
    }


def precision_status(device: torch.device) -> dict[str, str]:
    """What a job's ``auto`` precision runs in on ``device``, and why."""
    choice = choose_precision(Precision.AUTO, device)
    return {"auto": choice.precision.value, "reason": choice.reason}
