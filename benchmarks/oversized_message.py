#!/usr/bin/env python3
"""What an authenticated client's oversized multipart message costs the daemon's memory, and its TCP gate's
(issue #27, finding 2).

A TCP daemon (CURVE) is started with ``--max-image-side`` (which sets the message cap); a client with valid keys
sends one multipart message made of frames that are each within the frame cap, totalling ``--megabytes``.  The
resident sets of the daemon and of its gate are sampled while the message arrives; the figures printed are their
growth, whether an answer came, and whether TCP is still served.

    .venv/bin/python benchmarks/oversized_message.py --max-image-side 2048 --megabytes 700
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
    parser.add_argument("--max-image-side", type=int, default=2048, help="the daemon's option: sets the message cap")
    args = parser.parse_args()
    caps = MessageCaps.for_images(args.max_image_side**2, TCP_MAX_FRAME_BYTES)
    with tempfile.TemporaryDirectory() as directory:
        daemon = start_daemon(Path(directory), Path(directory) / "unused-weights.pth", "--lazy", "--endpoint", TCP,
                              "--max-image-side", str(args.max_image_side))
        try:
            try:
                pids = {"daemon": daemon.process.pid, "gate": daemon.gate_pid()}
            except (AssertionError, AttributeError):  # a daemon without a gate
                pids = {"daemon": daemon.process.pid}
            before = {name: resident_mib(pid) for name, pid in pids.items()}
            peak, stop = dict(before), threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    for name, pid in pids.items():
                        try:
                            peak[name] = max(peak[name], resident_mib(pid))
                        except (OSError, RuntimeError):  # the gate ended
                            pass
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            raw = daemon.raw_socket()
            frame = bytes(TCP_MAX_FRAME_BYTES)
            count = args.megabytes * 2**20 // TCP_MAX_FRAME_BYTES
            started = time.monotonic()
            raw.send_multipart([Codec().encode(MessageType.PING)[0], *[frame] * count], copy=False)
            answered = raw.poll(60_000)
            waited = time.monotonic() - started
            time.sleep(1.0)
            stop.set()
            sampler.join()
            with daemon.client() as client:
                client.ping()
            print(f"message of {count} frames × {TCP_MAX_FRAME_BYTES // 1024} KiB = {args.megabytes} MiB "
                  f"(--max-image-side {args.max_image_side}: message cap {caps.max_message_bytes / 2**20:.0f} MiB)")
            for name in pids:
                print(f"{name} RSS before {before[name]:.0f} MiB, peak {peak[name]:.0f} MiB: "
                      f"+{peak[name] - before[name]:.0f} MiB")
            print(f"answered: {bool(answered)} (after {waited:.1f} s); TCP still served: yes")
            raw.close(0)
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
