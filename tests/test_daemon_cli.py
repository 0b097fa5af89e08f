"""The daemon's command line and the client's start/retry logic, each against real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import zmq

from daemon.client import DaemonClient, DaemonJobError, DaemonUnreachableError, connect
from daemon.connection import ConnectionInfo, read_connection_file
from nst_engine.cli.image_files import read_image, write_image

from .stand_ins import smooth_image
from .daemon_harness import REPO_ROOT, TINY_SETTINGS, rgb_image, start_daemon


def daemon_cli(*args: str, connection_file, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_start_status_run_stop(tmp_path, weights_file):
    connection_file = tmp_path / "run" / "connection.json"
    started = daemon_cli("start", "--weights", str(weights_file), "--device", "cpu", connection_file=connection_file)
    assert started.returncode == 0, started.stderr
    info = read_connection_file(connection_file)
    try:
        # Detached: its own session, so that GIMP killing the plug-in's process group cannot reach it.
        assert os.getsid(info.pid) == info.pid != os.getsid(0)
        again = daemon_cli("start", "--weights", str(weights_file), connection_file=connection_file)
        assert again.returncode == 0 and "already running" in again.stdout
        assert read_connection_file(connection_file).pid == info.pid

        status = daemon_cli("status", connection_file=connection_file)
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == info.pid

        content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "out.png"
        write_image(content, smooth_image(40, 48, 1), bits=16)
        write_image(style, smooth_image(40, 40, 2))
        run = daemon_cli("run", str(content), str(style), "-o", str(out), "--size", "32", "--iterations", "2",
                         "--scales", "1", "-q", connection_file=connection_file)
        assert run.returncode == 0, run.stderr
        written = read_image(out)
        assert written.bits == 16 and written.rgb.shape == (3, 27, 32)
    finally:
        stopped = daemon_cli("stop", connection_file=connection_file)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not connection_file.exists()
    assert daemon_cli("status", connection_file=connection_file).returncode == 3


def test_connect_starts_a_daemon_when_none_answers(tmp_path, weights_file):
    connection_file = tmp_path / "connection.json"
    messages = []
    command = [sys.executable, "-m", "daemon", "start", "--weights", str(weights_file), "--device", "cpu"]
    client = connect(connection_file, start_command=command, on_wait=messages.append)
    try:
        assert messages == ["Starting the Neural Style daemon…"]
        client.ping()
    finally:
        client.close()
        daemon_cli("stop", connection_file=connection_file)


def test_unreachable_daemon_is_retried_then_reported(tmp_path):
    silent = zmq.Context.instance().socket(zmq.ROUTER)
    silent.bind(f"ipc://{tmp_path}/silent.sock")
    try:
        client = DaemonClient(ConnectionInfo(f"ipc://{tmp_path}/silent.sock", pid=1), timeout_s=0.3, retries=2)
        started = time.monotonic()
        with pytest.raises(DaemonUnreachableError, match="does not answer .*tried 3 times"):
            client.ping()
        assert time.monotonic() - started >= 0.8  # three waits of 0.3 s (polls round to whole milliseconds)
        received = 0
        while silent.poll(100):
            silent.recv_multipart()
            received += 1
        assert received == 3  # one request per attempt, each on a fresh socket
        client.close()
    finally:
        silent.close(0)


def test_no_connection_file_says_the_daemon_is_not_running(tmp_path):
    with pytest.raises(DaemonUnreachableError, match="not running"):
        connect(tmp_path / "absent.json")


def test_missing_weights_give_weights_unavailable_and_the_daemon_keeps_serving(tmp_path):
    daemon = start_daemon(tmp_path, tmp_path / "no-such-weights.pth", "--lazy")
    try:
        with daemon.client() as client:
            with pytest.raises(DaemonJobError, match="does not exist") as raised:
                client.stylize(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], TINY_SETTINGS)
            assert raised.value.code == "weights_unavailable"
            status = client.status()
            assert status["model"] == "failed" and "no-such-weights" in status["model_error"]
    finally:
        daemon.stop()


def test_ipc_endpoint(tmp_path, weights_file):
    daemon = start_daemon(tmp_path, weights_file, "--lazy", "--endpoint", f"ipc://{tmp_path}/daemon.sock")
    try:
        assert daemon.info.endpoint.startswith("ipc://")
        with daemon.client() as client:
            client.ping()
    finally:
        daemon.stop()
