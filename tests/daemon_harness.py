"""Running a real daemon process on loopback for the integration tests."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgpack
import numpy as np
import zmq

from daemon.client.zeromq import DaemonClient, configure_socket
from daemon.wire.connection import ConnectionFileError, ConnectionInfo, CurveKeys, read_connection_file
from daemon.wire.messages import DType, Image, ImageSpec

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunningDaemon:
    process: subprocess.Popen
    connection_file: Path
    log_file: Path

    @property
    def info(self) -> ConnectionInfo:
        return read_connection_file(self.connection_file)

    def client(self, **options) -> DaemonClient:
        return DaemonClient(self.info, **options)

    def raw_socket(self) -> zmq.Socket:
        """A DEALER socket with this client's credentials, for sending whatever frames a test likes."""
        socket = zmq.Context.instance().socket(zmq.DEALER)
        configure_socket(socket, self.info)
        socket.connect(self.info.endpoint)
        return socket

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def gate_pid(self) -> int:
        """The pid of the daemon's TCP gate (its one child process)."""
        pid = self.process.pid
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
        assert len(children) == 1, f"the daemon has children {children}, not one gate"
        return children[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


TCP = "tcp://127.0.0.1:0"  # the endpoint for tests that need TCP (with CURVE); the default is an ipc socket


def start_daemon(directory: Path, weights_file: Path, *extra: str, timeout_s: float = 60) -> RunningDaemon:
    connection_file = directory / "connection.json"
    log_file = directory / "daemon.log"
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    command = [sys.executable, "-m", "daemon", "serve", "--weights", str(weights_file), "--device", "cpu",
               "--test-faults", "-v", *extra]
    with open(log_file, "ab") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    daemon = RunningDaemon(process, connection_file, log_file)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{daemon.log()}")
        try:
            if daemon.info.pid == process.pid:
                with daemon.client() as client:
                    while "--lazy" not in extra and any(d["model"] != "loaded" for d in client.status().devices):
                        time.sleep(0.05)
                return daemon
        except ConnectionFileError:
            pass
        time.sleep(0.05)
    daemon.stop()
    raise RuntimeError(f"daemon did not start:\n{daemon.log()}")


def random_curve_keys() -> CurveKeys:
    """Keys of no daemon: for connection files that must be well-formed but lead nowhere."""
    (server, _), (public, secret) = zmq.curve_keypair(), zmq.curve_keypair()
    return CurveKeys(server.decode(), public.decode(), secret.decode())


def rgb_image(height: int, width: int, seed: int, dtype: DType = DType.U8, channels: int = 3) -> Image:
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, height // 8), max(2, width // 8), channels))
    pixels = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
    pixels = np.pad(pixels, ((0, height - pixels.shape[0]), (0, width - pixels.shape[1]), (0, 0)), mode="edge")
    if dtype is DType.U8:
        data = (pixels * 255).round().astype(np.uint8)
    elif dtype is DType.U16:
        data = (pixels * 65535).round().astype("<u2")
    elif dtype is DType.F16:
        data = pixels.astype("<f2")
    else:
        data = pixels.astype("<f4")
    return Image(ImageSpec(width, height, channels, dtype), memoryview(np.ascontiguousarray(data)).cast("B"))


def image_array(image: Image) -> np.ndarray:
    spec = image.spec
    dtype = {DType.U8: np.uint8, DType.U16: "<u2", DType.F32: "<f4", DType.F16: "<f2"}[spec.dtype]
    return np.frombuffer(image.data, dtype=dtype).reshape(spec.height, spec.width, spec.channels)


TINY_SETTINGS = {"size": 32, "iterations": 3, "scales": 1}
LONG_SETTINGS = {"size": 48, "iterations": 100_000, "scales": 1, "optimizer": "adam"}


# Header frames that must each be refused as invalid_request (by the codec, and by a running daemon).
BAD_HEADERS = {
    "not msgpack": b"\xc1",
    "truncated": msgpack.packb({"v": 1, "type": "ping"})[:-2],
    "trailing bytes": msgpack.packb({"v": 1, "type": "ping", "id": "a", "ts": 0.0, "body": {}}) + b"\x00",
    "map claims more entries": b"\xde\x00\x04zzz",
    "nesting deeper than 1024": b"\x91" * 1100 + b"\xc0",
    "non-string keys": msgpack.packb({1: 2}),
    "invalid utf-8": b"\x81\xa1v\xa2\xff\xfe",
    "binary data": msgpack.packb({"v": b"bytes"}, use_bin_type=True),
    "not a map": msgpack.packb([1, 2, 3]),
    "huge declared array": b"\xdd\xff\xff\xff\xff",
}


def load_script(path: str):
    """A script of the repository that is no package module (``"install.py"``, ``"docs/message_tables.py"``,
    ``"benchmarks/memory_use.py"``), loaded as a module; registered in sys.modules, where dataclasses
    look their module up."""
    file = REPO_ROOT / path
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float = 30.0, what: str = "") -> T:
    """``predicate``'s first truthy value, asked every 50 ms; an AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s" + (f": {what}" if what else "")
        time.sleep(0.05)
    return value
