#!/usr/bin/env python3
"""The daemon's jobs on a Ray cluster (issue #29) against local workers, on this machine.  Runs a Ray head on
127.0.0.1 and must run inside a network namespace of its own, where that is the only address (as root):

    unshare --net .venv/bin/python benchmarks/ray_pool.py --random-weights

Prints: the time of one job end to end through Ray and through a local worker (one thread, as an actor given one
CPU has), in alternation, at 0.25 MP and at 32² (the overhead per job, medians of --repeats); jobs per minute with
one Ray actor and with two (four jobs submitted at once); the memory of an idle head with two actors (the resident
sets of the head's process tree); what a 4096² image costs through Ray's object store, to an actor and back, as the
daemon's frames (bytes) travel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.daemon_harness import RunningDaemon, rgb_image, start_daemon  # noqa: E402
from tests.ray_cluster import private, ray_daemon, ray_head, ray_workers, wait_for  # noqa: E402
from tests.stand_ins import write_random_vgg19_features  # noqa: E402

PORT = 6399
MIB = 2**20


def job_seconds(daemons: list[RunningDaemon], side: int, iterations: int, repeats: int) -> list[float]:
    """Per daemon, the median time of one job, the daemons taking turns (under a varying load, each sees the same)."""
    settings = {"size": side, "iterations": iterations, "scales": 1, "optimizer": "adam", "precision": "fp32"}
    times: list[list[float]] = [[] for _ in daemons]
    clients = [daemon.client() for daemon in daemons]
    try:
        for client in clients:
            client.stylize(rgb_image(side, side, 1), [rgb_image(side, side, 2)], settings)  # warm: the style cached
        for _ in range(repeats):
            for client, samples in zip(clients, times):
                started = time.perf_counter()
                client.stylize(rgb_image(side, side, 1), [rgb_image(side, side, 2)], settings)
                samples.append(time.perf_counter() - started)
    finally:
        for client in clients:
            client.close()
    return [statistics.median(samples) for samples in times]


def jobs_per_minute(daemon: RunningDaemon, jobs: int, side: int, iterations: int) -> float:
    settings = {"size": side, "iterations": iterations, "scales": 1, "optimizer": "adam", "precision": "fp32"}

    def one(seed: int) -> None:
        with daemon.client() as client:
            client.stylize(rgb_image(side, side, seed), [rgb_image(side, side, 50)], settings)

    one(0)  # the model and the style cache warm
    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(1, jobs + 1)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return jobs * 60 / (time.perf_counter() - started)


def tree_rss_mib(pid: int) -> float:
    """The resident sets of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def object_store_seconds(side: int, channels: int, itemsize: int, repeats: int) -> tuple[float, float]:
    """(seconds to an actor, seconds back) for a side×side image as bytes, through the object store."""
    import ray

    @ray.remote(num_cpus=0)
    class Sink:
        def take(self, frame: bytes) -> int:
            return len(frame)

        def give(self, size: int) -> bytes:
            return bytes(size)

    sink = Sink.remote()
    ray.get(sink.take.remote(b""))
    frame = bytes(side * side * channels * itemsize)
    there, back = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        ray.get(sink.take.remote(frame))
        there.append(time.perf_counter() - started)
        started = time.perf_counter()
        ray.get(sink.give.remote(len(frame)))
        back.append(time.perf_counter() - started)
    ray.kill(sink)
    return statistics.median(there), statistics.median(back)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", type=Path)
    weights.add_argument("--random-weights", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as directory:
        work = Path(directory)
        weights_file = args.weights or write_random_vgg19_features(work / "vgg19.pth")
        os.environ["OMP_NUM_THREADS"] = "1"  # the local daemon computes as an actor with one CPU does
        local = start_daemon(private(work / "local"), weights_file)
        del os.environ["OMP_NUM_THREADS"]
        try:
            with ray_head(PORT, 2) as head:
                rates = {}
                for count in (1, 2):
                    daemon = ray_daemon(private(work / f"ray{count}"), weights_file, PORT, count)
                    try:
                        wait_for(lambda d=daemon, n=count: sum(w["state"] == "ready" for w in ray_workers(d)) == n,
                                 180, "ready actors")
                        if count == 1:
                            local_s, ray_s = job_seconds([local, daemon], 512, 5, args.repeats)
                            local_tiny_s, ray_tiny_s = job_seconds([local, daemon], 32, 3, args.repeats)
                        else:
                            time.sleep(2.0)
                            idle_mib = tree_rss_mib(head.pid)
                        rates[count] = jobs_per_minute(daemon, 4, 256, 10)
                    finally:
                        daemon.stop()
                import ray

                ray.init(address=f"127.0.0.1:{PORT}", logging_level="ERROR", log_to_driver=False)
                transfers = {name: object_store_seconds(4096, channels, itemsize, args.repeats)
                             for name, channels, itemsize in (("RGB u8", 3, 1), ("RGBA f32", 4, 4))}
                ray.shutdown()
        finally:
            local.stop()
    print(f"one job, fp32, style cached, medians of {args.repeats} in alternation: 5 Adam iterations at 512² "
          f"(0.25 MP): local worker {local_s:.2f} s, one Ray actor {ray_s:.2f} s ({1000 * (ray_s - local_s):+.0f} ms);"
          f" 3 iterations at 32²: {1000 * local_tiny_s:.0f} ms and {1000 * ray_tiny_s:.0f} ms "
          f"({1000 * (ray_tiny_s - local_tiny_s):+.0f} ms)")
    print(f"four 256² jobs of 10 iterations at once through Ray: one actor {rates[1]:.1f}, two actors "
          f"{rates[2]:.1f} jobs/min ({rates[2] / rates[1]:.2f}×)")
    print(f"idle Ray head with two actors (model loaded): {idle_mib:.0f} MiB resident in all")
    for name, (there, back) in transfers.items():
        size = 4096 * 4096 * (3 if name == "RGB u8" else 16)
        print(f"a 4096² {name} image ({size / MIB:.0f} MiB) through the object store: {1000 * there:.0f} ms to an "
              f"actor, {1000 * back:.0f} ms back")


if __name__ == "__main__":
    main()
