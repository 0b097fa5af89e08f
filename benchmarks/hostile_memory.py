#!/usr/bin/env python3
"""The daemon's memory under a hostile invited client (issue #27), with the tests' helpers
(tests/test_hostile_clients.py).

Prints, for a TCP daemon on 127.0.0.1 and an invited client:
- the preview flood: the client asks for a preview every iteration at SIDE×SIDE (f32) and reads nothing until its
  job is done: the daemon's RSS before, its peak growth meanwhile (VmHWM), and the previews the client then gets;
- the idle-connection flood: a daemon started under ``ulimit -n SOFT`` (hard HARD), another user holding COUNT raw
  TCP connections from 127.0.0.2 (opening a new one for each the daemon closes): the daemon's limit, its RSS growth,
  its open descriptors and the connections it holds from 127.0.0.2 (medians and peaks over the flood), and how
  long an invited client's ping took meanwhile (connect, hello, ping: how many failed, and the slowest).

    .venv/bin/python benchmarks/hostile_memory.py --random-weights      # or --weights FILE
    .venv/bin/python benchmarks/hostile_memory.py --random-weights --side 2048 --iterations 40 --count 1000
    .venv/bin/python benchmarks/hostile_memory.py --random-weights --only connections --soft 1024 --hard 1024

The idle-connection flood needs root (the attacker runs as uid 65534); without it, it is left out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from daemon.client.contract import DaemonError  # noqa: E402
from tests.daemon_harness import start_daemon  # noqa: E402
from tests.stand_ins import write_random_vgg19_features  # noqa: E402
from tests.test_hostile_clients import (  # noqa: E402
    client_on,
    connections_held_from,
    end_flood,
    idle_flood,
    invite,
    open_files_limit,
    preview_flood,
    private_dir,
    proc_status,
    start_limited_daemon,
)

MIB = 2**20


def preview_figures(work: Path, weights: Path, side: int, iterations: int) -> None:
    daemon = start_daemon(private_dir(work / "preview" / "server"), weights, "--endpoint", "tcp://127.0.0.1:0",
                          "--client-timeout", "60")
    try:
        figures = preview_flood(daemon, invite(daemon, work / "preview" / "client", "flood"), side, iterations)
    finally:
        daemon.stop()
    preview = side * side * 3 * 4
    print(f"preview flood: {iterations} iterations, a {side}×{side} f32 preview each ({preview / MIB:.0f} MiB)")
    print(f"  daemon RSS before {figures['before'] / MIB:.0f} MiB, peak {figures['peak'] / MIB:.0f} MiB: "
          f"+{(figures['peak'] - figures['before']) / MIB:.0f} MiB "
          f"({(figures['peak'] - figures['before']) / preview:.1f} previews' worth)")
    print(f"  read afterwards: {figures['previews']} previews, the last from iteration {figures['last_iteration']}")


def descriptor_figures(work: Path, weights: Path, soft: int, hard: int, count: int, seconds: float) -> None:
    daemon = start_limited_daemon(soft, hard, private_dir(work / "fds" / "server"), weights, "--lazy",
                                  "--endpoint", "tcp://127.0.0.1:0", "--client-timeout", "30")
    pid, port = daemon.process.pid, int(daemon.info.endpoint.rsplit(":", 1)[1])
    try:
        running_limit = open_files_limit(pid)[0]
        invited = invite(daemon, work / "fds" / "client", "laptop")
        before, descriptors_before = proc_status(pid, "VmRSS"), len(os.listdir(f"/proc/{pid}/fd"))
        flood = idle_flood(port, "127.0.0.2", count, refill=True)
        held, descriptors, rss, pings, failed = [], [], [], [], 0
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    with client_on(invited, attempts=1) as client:  # hello within 2 s, then a ping within 2 s
                        client.ping()
                    pings.append(time.perf_counter() - started)
                except (AssertionError, DaemonError):
                    failed += 1
                for _ in range(5):
                    held.append(connections_held_from(pid, "127.0.0.2"))
                    descriptors.append(len(os.listdir(f"/proc/{pid}/fd")))
                    rss.append(proc_status(pid, "VmRSS"))
                    time.sleep(0.1)
        finally:
            end_flood(flood)
    finally:
        daemon.stop()
    print(f"idle-connection flood: {count} connections from 127.0.0.2 for {seconds:g} s, daemon started with "
          f"ulimit -n {soft} (hard {hard}), running with a soft limit of {running_limit}")
    print(f"  daemon descriptors: {descriptors_before} before, median {statistics.median(descriptors):.0f}, "
          f"peak {max(descriptors)}; connections held from 127.0.0.2: median {statistics.median(held):.0f}, "
          f"peak {max(held)}")
    print(f"  daemon RSS: {before / MIB:.0f} MiB before, peak +{(max(rss) - before) / MIB:.1f} MiB")
    slowest = f"slowest {max(pings) * 1000:.0f} ms, median {statistics.median(pings) * 1000:.0f} ms" if pings else ""
    print(f"  invited client's connect+hello+ping (2 s each): {len(pings)} done, {failed} failed; {slowest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", type=Path)
    weights.add_argument("--random-weights", action="store_true", help="a seeded random VGG19 (figures only)")
    parser.add_argument("--side", type=int, default=1024, help="the previews' side (default 1024)")
    parser.add_argument("--iterations", type=int, default=60, help="iterations, a preview each (default 60)")
    parser.add_argument("--soft", type=int, default=256, help="the daemon's ulimit -n (default 256)")
    parser.add_argument("--hard", type=int, default=1024, help="its hard limit (default 1024)")
    parser.add_argument("--count", type=int, default=1000, help="idle connections (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the idle flood lasts (default 10)")
    parser.add_argument("--only", choices=("previews", "connections"), help="one of the two floods")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-memory-") as directory:
        work = Path(directory)
        weights_file = write_random_vgg19_features(work / "vgg19-random.pth") if args.random_weights else args.weights
        if args.only != "connections":
            preview_figures(work, weights_file, args.side, args.iterations)
        if args.only == "previews":
            pass
        elif os.geteuid() == 0:
            descriptor_figures(work, weights_file, args.soft, args.hard, args.count, args.seconds)
        else:
            print("idle-connection flood: left out (the attacker runs as uid 65534, which needs root)")


if __name__ == "__main__":
    main()
