"""Several devices (issue #16): one worker per device, each job on the first free one.  Two CPU workers
(``--devices cpu,cpu``) stand in for two GPUs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from daemon.client.contract import DaemonJobError
from daemon.server.devices import resolve_devices

from .daemon_harness import LONG_SETTINGS, TINY_SETTINGS, image_array, rgb_image, start_daemon, wait_until


@pytest.fixture(scope="module")
def two_worker_daemon(tmp_path_factory, weights_file):
    directory = tmp_path_factory.mktemp("devices")
    directory.chmod(0o700)
    # Clients that submit and then only poll status do not heartbeat: a long client timeout keeps their jobs.
    running = start_daemon(directory, weights_file, "--devices", "cpu,cpu", "--client-timeout", "600")
    yield running
    running.stop()



def devices_where(client, condition):
    """The status's devices when ``condition`` holds for each of them, else None."""
    devices = client.status().devices
    return devices if all(condition(d) for d in devices) else None


def test_two_jobs_run_at_once_one_per_device(two_worker_daemon):
    daemon = two_worker_daemon
    with daemon.client() as first, daemon.client() as second, daemon.client() as observer:
        devices = wait_until(lambda: devices_where(observer, lambda d: d["model"] == "loaded"))
        assert [d["device"] for d in devices] == ["cpu", "cpu"] and devices[0]["name"] == "cpu"
        a = first.submit(rgb_image(48, 48, 1), [rgb_image(32, 32, 2)], LONG_SETTINGS)
        b = second.submit(rgb_image(48, 48, 3), [rgb_image(32, 32, 4)], LONG_SETTINGS)
        both = wait_until(lambda: devices_where(first, lambda d: d["running"]))
        # Its own job by id, the other client's job counted without one.
        assert sorted(str(d["running"]["job_id"]) for d in both) == sorted([a, "None"])
        for client, job in ((first, a), (second, b)):
            client.cancel(job)
            with pytest.raises(DaemonJobError) as cancelled:
                client.wait(job)
            assert cancelled.value.code == "cancelled"


def test_each_concurrent_client_gets_its_own_correct_result_and_a_failure_stays_on_its_device(two_worker_daemon):
    daemon = two_worker_daemon
    settings = {**TINY_SETTINGS, "iterations": 20}
    jobs = {seed: (rgb_image(40, 32, seed), [rgb_image(32, 32, seed + 10)]) for seed in (1, 2)}
    with daemon.client() as client:  # each alone first, for reference
        alone = {seed: image_array(client.stylize(content, styles, settings).image)
                 for seed, (content, styles) in jobs.items()}
    together: dict[int, np.ndarray] = {}

    def run(seed: int) -> None:
        with daemon.client() as client:
            together[seed] = image_array(client.stylize(*jobs[seed], settings).image)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done_before = sum(d["jobs_done"] for d in daemon.client().status().devices)
    for seed in jobs:
        assert together[seed].shape == alone[seed].shape == (32, 26, 3)
        assert np.abs(together[seed] - alone[seed]).max() <= 0.01, seed
    assert np.abs(together[1] - together[2]).mean() > 0.05  # not each other's

    # One device's job fails while the other device's job runs on; the failed device then takes the next job.
    with daemon.client() as long_client, daemon.client() as faulty, daemon.client() as next_client:
        long_job = long_client.submit(rgb_image(48, 48, 5), [rgb_image(32, 32, 6)], LONG_SETTINGS)
        wait_until(lambda: any(d["running"] and d["running"]["job_id"] == long_job
                               for d in long_client.status().devices))
        with pytest.raises(DaemonJobError) as failed:
            faulty.stylize(rgb_image(32, 32, 7), [rgb_image(32, 32, 8)], settings, fault="fail")
        assert failed.value.code == "internal"
        result = next_client.stylize(rgb_image(40, 32, 1), [rgb_image(32, 32, 11)], settings)
        assert result.image.spec.width == 26
        status = long_client.status()
        assert any(d["running"] and d["running"]["job_id"] == long_job for d in status.devices)
        assert sum(d["jobs_done"] for d in status.devices) == done_before + 1 and status.jobs_done == done_before + 1
        long_client.cancel(long_job)
        with pytest.raises(DaemonJobError):
            long_client.wait(long_job)


def test_device_choice():
    assert resolve_devices("cuda:0,cuda:1", "cpu", 4) == ["cuda:0", "cuda:1"]
    assert resolve_devices("cpu,cpu", None, 0) == ["cpu", "cpu"]
    assert resolve_devices(None, "cuda:1", 2) == ["cuda:1"]
    assert resolve_devices(None, None, 3) == ["cuda:0", "cuda:1", "cuda:2"]  # every visible GPU
    assert resolve_devices(None, None, 1) == [None]  # the automatic choice: that GPU (or MPS, or the CPU)
    assert resolve_devices(None, None, 0) == [None]
    with pytest.raises(ValueError):
        resolve_devices("cuda:0,", None, 2)


def cuda_devices() -> list[str]:
    """Each visible GPU, or the one GPU twice (two workers on one GPU still run two jobs at once)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{index}" for index in range(count)] if count > 1 else ["cuda:0", "cuda:0"]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU here")
def test_cuda_workers_run_jobs_at_once_each_with_its_own_result(tmp_path, weights_file):
    """The CPU workers' tests above, on CUDA: one worker per GPU with its own VGG, both running at
    once (each setting its own float32 mode), and each client's result the one it gets alone."""
    tmp_path.chmod(0o700)
    devices = cuda_devices()
    daemon = start_daemon(tmp_path, weights_file, "--devices", ",".join(devices), "--client-timeout", "600")
    try:
        settings = {"size": 64, "iterations": 30, "scales": 1}
        jobs = {seed: (rgb_image(64, 64, seed), [rgb_image(64, 64, seed + 10)]) for seed in (1, 2)}
        precisions = {1: "tf32", 2: "fp32"}  # different process-wide float32 modes at the same time
        with daemon.client() as client:
            status = wait_until(lambda: devices_where(client, lambda d: d["model"] == "loaded"), 120)
            assert [d["device"] for d in status] == devices
            assert all(d["memory"]["total_bytes"] > 0 and d["name"] != d["device"] for d in status)
            alone = {
                seed: image_array(client.stylize(content, styles, {**settings, "precision": precisions[seed]}).image)
                for seed, (content, styles) in jobs.items()
            }
        together: dict[int, np.ndarray] = {}

        def run(seed: int) -> None:
            with daemon.client() as client:
                together[seed] = image_array(
                    client.stylize(*jobs[seed], {**settings, "precision": precisions[seed]}).image)

        with daemon.client() as first, daemon.client() as second:
            a = first.submit(rgb_image(64, 64, 3), [rgb_image(32, 32, 4)], LONG_SETTINGS)
            b = second.submit(rgb_image(64, 64, 5), [rgb_image(32, 32, 6)], LONG_SETTINGS)
            wait_until(lambda: devices_where(first, lambda d: d["running"]), 60)
            for client, job in ((first, a), (second, b)):
                client.cancel(job)
                with pytest.raises(DaemonJobError):
                    client.wait(job)
        threads = [threading.Thread(target=run, args=(seed,)) for seed in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        for seed in jobs:
            # cuDNN's autotuned kernels may differ between runs: close, not bit for bit.
            assert np.abs(together[seed] - alone[seed]).mean() <= 0.01, seed
        assert np.abs(together[1] - together[2]).mean() > 0.05
    finally:
        daemon.stop()
