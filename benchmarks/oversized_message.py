#!/usr/bin/env python3
"""What an authenticated client's oversized multipart message costs the daemon's memory (issue #27, finding 2).

A TCP daemon (CURVE) is started; a client with valid keys sends one multipart message made of frames that are
each within the frame cap, totalling ``--megabytes``, far over the message cap.  The daemon's resident set is
sampled while the message arrives; the figure printed is its growth, then whether the daemon still answers.

    .venv/bin/python benchmarks/oversized_message.py --megabytes 700
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from daemon.wire.framing import Codec  # noqa: E402
from daemon.wire.limits import TCP_MAX_FRAME_BYTES, MessageCaps  # noqa: E402
from daemon.wire.messages import MessageType  # noqa: E402
from tests.daemon_harness import TCP, start_daemon  # noqa: E402


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=700, help="the message's total size in MiB")
    args = parser.parse_args()
    caps = MessageCaps.for_images(max_frame_bytes=TCP_MAX_FRAME_BYTES)
    with tempfile.TemporaryDirectory() as directory:
        daemon = start_daemon(Path(directory), Path(directory) / "unused-weights.pth", "--lazy", "--endpoint", TCP)
        try:
            pid = daemon.process.pid
            before = resident_mib(pid)
            peak, stop = [before], threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], resident_mib(pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            raw = daemon.raw_socket()
            frame = bytes(TCP_MAX_FRAME_BYTES)
            count = args.megabytes * 2**20 // TCP_MAX_FRAME_BYTES
            raw.send_multipart([Codec().encode(MessageType.PING)[0], *[frame] * count], copy=False)
            answered = raw.poll(120_000)
            time.sleep(1.0)
            stop.set()
            sampler.join()
            with daemon.client() as client:
                client.ping()
            print(f"message of {count} frames × {TCP_MAX_FRAME_BYTES // 1024} KiB = {args.megabytes} MiB "
                  f"(message cap {caps.max_message_bytes / 2**20:.0f} MiB, frame cap {caps.max_frame_bytes // 1024} "
                  f"KiB)")
            print(f"daemon RSS before {before:.0f} MiB, peak {peak[0]:.0f} MiB: +{peak[0] - before:.0f} MiB; "
                  f"refused with an answer: {bool(answered)}; still serving: yes")
            raw.close(0)
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
