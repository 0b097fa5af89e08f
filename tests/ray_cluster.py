"""A Ray head and a daemon serving on it, inside a network namespace of the caller's making, where 127.0.0.1 is the
only address (tests/test_ray_pool.py runs this under ``unshare --net``; Ray left to itself advertises and listens
on the machine's other interfaces).  ``python -m tests.ray_cluster SCENARIO WEIGHTS`` runs one scenario with plain
asserts and prints its figures as one JSON line; the exit status says whether it held.

Everything started here is ended by its process id (never ``ray stop``, which ends every Ray process on the
machine by name)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from daemon.client.contract import DaemonJobError

from .daemon_harness import TINY_SETTINGS, RunningDaemon, image_array, rgb_image, start_daemon

RAY = Path(sys.executable).with_name("ray")
SETTINGS = {**TINY_SETTINGS, "iterations": 20, "precision": "fp32"}


@contextlib.contextmanager
def ray_head(port: int, cpus: int) -> Iterator[subprocess.Popen]:
    """``ray start --head --block`` on 127.0.0.1 in a temporary directory of its own."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    temporary = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's sockets live under it
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temporary}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield head
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)  # the head ends its raylet, GCS and workers
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def ray_daemon(directory: Path, weights: Path, port: int, workers: int, *extra: str) -> RunningDaemon:
    return start_daemon(directory, weights, "--ray", f"127.0.0.1:{port}", "--ray-workers", str(workers),
                        "--client-timeout", "30", *extra, timeout_s=180)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)
    return value


def ray_workers(daemon: RunningDaemon) -> list[dict]:
    with daemon.client() as client:
        return client.status().ray["workers"]


def ready_actors(daemon: RunningDaemon) -> list[dict]:
    return wait_for(lambda: [w for w in ray_workers(daemon) if w["state"] == "ready"], 120, "a ready actor")


def slow_job(daemon: RunningDaemon, client) -> str:
    """A job that runs for long (the test fault "slow"), once it runs on the one actor."""
    job = client.submit(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], SETTINGS, fault="slow")
    wait_for(lambda: ray_workers(daemon)[0]["running"] == "", 60, "the job running")  # another client's to us
    return job


def two_jobs_at_once(weights: Path, work: Path) -> dict:
    """Two clients' jobs at once, one on each actor, with the results a local worker gives."""
    jobs = {seed: (rgb_image(40, 32, seed), [rgb_image(32, 32, seed + 10)]) for seed in (1, 2)}
    local = start_daemon(private(work / "local"), weights)
    try:
        with local.client() as client:
            alone = {seed: image_array(client.stylize(*job, SETTINGS).image) for seed, job in jobs.items()}
    finally:
        local.stop()
    with ray_head(6390, 2):
        started = time.monotonic()
        daemon = ray_daemon(private(work / "ray"), weights, 6390, 2)
        try:
            ready_s = time.monotonic() - started
            wait_for(lambda: all(w["state"] == "ready" for w in ray_workers(daemon)), 120, "two ready actors")
            together: dict[int, np.ndarray] = {}

            def run(seed: int) -> None:
                with daemon.client() as client:
                    together[seed] = image_array(client.stylize(*jobs[seed], SETTINGS).image)

            threads = [threading.Thread(target=run, args=(seed,)) for seed in jobs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            workers = ray_workers(daemon)
            assert sorted(w["jobs_done"] for w in workers) == [1, 1], workers
            assert len({w["pid"] for w in workers}) == 2 and all(w["node"] for w in workers), workers
            for seed in jobs:
                difference = np.abs(together[seed] - alone[seed]).max()
                assert difference <= 0.01, (seed, difference)
            assert np.abs(together[1] - together[2]).mean() > 0.05  # not each other's
            # The first job's style again: the actor that holds its targets takes it, and they are not computed again.
            with daemon.client() as client:
                hits = client.status().style_cache["hits"]
                client.stylize(rgb_image(40, 32, 5), jobs[1][1], SETTINGS)
                status = client.status()
            again = [w for w in status.ray["workers"] if w["jobs_done"] == 2]
            assert len(again) == 1 and status.style_cache["hits"] > hits, (status.ray, status.style_cache)
            # A warm start from that result with the second job's style: it goes to the other actor, which gets
            # the result to start from through the daemon.
            with daemon.client() as client:
                first = client.stylize(rgb_image(40, 32, 5), jobs[1][1], SETTINGS)
                progress: list = []
                warm = client.stylize(rgb_image(40, 32, 5), jobs[2][1], SETTINGS, warm_start=first.job_id,
                                      preview_every=5, on_progress=progress.append)
                status = client.status()
            assert warm.image.spec.width == 26
            previews = [p for p in progress if p.preview is not None]  # through Ray as from a local worker
            assert [p.iteration for p in previews] == [5, 10, 15, 20] and previews[0].preview.spec.width == 26
            assert sorted(w["jobs_done"] for w in status.ray["workers"]) == [2, 3], status.ray
            return {"ready_s": round(ready_s, 1), "workers": status.ray["workers"], "style_cache": status.style_cache}
        finally:
            daemon.stop()


def killed_worker(weights: Path, work: Path) -> dict:
    """kill -9 of the running actor's process: its job fails with one line, the actor comes back, the next job runs."""
    with ray_head(6391, 1):
        daemon = ray_daemon(private(work / "ray"), weights, 6391, 1)
        try:
            first = ready_actors(daemon)
            with daemon.client() as client:
                job = slow_job(daemon, client)
                killed_at = time.monotonic()
                os.kill(first[0]["pid"], signal.SIGKILL)
                try:
                    client.wait(job)
                    raise AssertionError("the job outlived its worker")
                except DaemonJobError as error:
                    message = str(error)
                failed_s = time.monotonic() - killed_at
            assert "ended during it" in message and "\n" not in message, message
            back = wait_for(lambda: [w for w in ray_workers(daemon) if w["state"] == "ready"], 120, "the actor back")
            assert back[0]["pid"] != first[0]["pid"], back
            with daemon.client() as client:
                result = client.stylize(rgb_image(32, 32, 3), [rgb_image(32, 32, 4)], SETTINGS)
            assert result.image.spec.width == 32
            return {"message": message, "failed_after_s": round(failed_s, 2), "new_pid": back[0]["pid"]}
        finally:
            daemon.stop()


def cancelled(weights: Path, work: Path) -> dict:
    """A cancel reaches the running actor within 2 s; a client that vanishes has its Ray job cancelled."""
    with ray_head(6392, 1):
        daemon = ray_daemon(private(work / "ray"), weights, 6392, 1)
        try:
            ready_actors(daemon)
            with daemon.client() as client:
                job = slow_job(daemon, client)
                asked = time.monotonic()
                client.cancel(job)
                try:
                    client.wait(job)
                    raise AssertionError("the job was not cancelled")
                except DaemonJobError as error:
                    assert error.code == "cancelled", error
                cancel_s = time.monotonic() - asked
            assert cancel_s < 2.0, cancel_s
            wait_for(lambda: ray_workers(daemon)[0]["running"] is None, 10, "the actor free")
            vanishing = daemon.client()
            slow_job(daemon, vanishing)
            vanishing.close()
            gone = time.monotonic()
            wait_for(lambda: ray_workers(daemon)[0]["running"] is None, 10, "the vanished client's job ended")
            return {"cancel_s": round(cancel_s, 2), "vanished_s": round(time.monotonic() - gone, 2)}
        finally:
            daemon.stop()


def cluster_lost(weights: Path, work: Path) -> dict:
    """The whole cluster ends mid-job: the job fails with one line, and the daemon goes on serving status past the
    minute after which Ray ends a driver that lost its cluster (the daemon waits for ever instead)."""
    with ray_head(6394, 1) as head:
        daemon = ray_daemon(private(work / "ray"), weights, 6394, 1)
        try:
            ready_actors(daemon)
            with daemon.client() as client:
                job = slow_job(daemon, client)
                os.killpg(head.pid, signal.SIGKILL)
                lost = time.monotonic()
                try:
                    client.wait(job)
                    raise AssertionError("the job outlived its cluster")
                except DaemonJobError as error:
                    message = str(error)
            assert "ended during it" in message and "\n" not in message, message
            while time.monotonic() - lost < 75:
                assert daemon.process.poll() is None, daemon.log()[-2000:]
                time.sleep(5)
            workers = ray_workers(daemon)
            assert workers[0]["state"] in ("starting", "dead"), workers
            return {"message": message, "served_for_s": round(time.monotonic() - lost)}
        finally:
            daemon.stop()


def private(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    return path


SCENARIOS = {"two_jobs_at_once": two_jobs_at_once, "killed_worker": killed_worker, "cancelled": cancelled,
             "cluster_lost": cluster_lost}

if __name__ == "__main__":
    scenario, weights_path = sys.argv[1], Path(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="ray-test-") as directory:
        print(json.dumps({scenario: SCENARIOS[scenario](weights_path, Path(directory))}), flush=True)
