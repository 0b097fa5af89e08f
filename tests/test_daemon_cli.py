"""The daemon's command line and the client's start/retry logic, each against real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import zmq

from daemon.client.contract import DaemonJobError, DaemonUnreachableError
from daemon.client.zeromq import DaemonClient, connect
from daemon.wire.connection import ConnectionInfo, read_connection_file
from nst_engine.cli.image_files import read_image, write_image

from .daemon_harness import REPO_ROOT, TINY_SETTINGS, rgb_image, start_daemon
from .stand_ins import smooth_image


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
            assert status.devices[0]["model"] == "failed" and "no-such-weights" in status.devices[0]["model_error"]
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


def test_run_takes_the_engine_clis_masks_and_gives_its_result(tmp_path, weights_file):
    """``python -m daemon run --style-masks … --style-image-masks …`` reads the masks as nst_engine's command
    line does, and the daemon's result is the engine CLI's, pixel for pixel (8-bit files)."""
    import torch

    content, styles = tmp_path / "c.png", [tmp_path / "s1.png", tmp_path / "s2.png"]
    write_image(content, smooth_image(40, 48, 1))
    for number, style in enumerate(styles, start=2):
        write_image(style, smooth_image(40, 40, number))
    left = torch.zeros(3, 40, 48)
    left[:, :, :24] = 1.0
    write_image(tmp_path / "left.png", left)
    write_image(tmp_path / "right.png", 1.0 - left)
    write_image(tmp_path / "top.png", torch.cat([torch.ones(3, 20, 40), torch.zeros(3, 20, 40)], dim=1))
    masks = ["--style-masks", str(tmp_path / "left.png"), str(tmp_path / "right.png"),
             "--style-image-masks", str(tmp_path / "top.png"), "-"]
    common = ["--size", "32", "--iterations", "3", "--scales", "1", "--init", "noise", "--seed", "5", "-q"]
    (tmp_path / "d").mkdir()
    daemon = start_daemon(tmp_path / "d", weights_file)
    try:
        run = daemon_cli("run", str(content), *map(str, styles), "-o", str(tmp_path / "daemon.png"), *masks, *common,
                         connection_file=daemon.connection_file)
        assert run.returncode == 0, run.stderr
        wrong = daemon_cli("run", str(content), *map(str, styles), "-o", str(tmp_path / "x.png"), "--style-masks",
                           str(tmp_path / "left.png"), *common, connection_file=daemon.connection_file)
        assert wrong.returncode == 1 and wrong.stderr.strip().count("\n") == 0
        assert "--style-masks needs one mask (or -) per style image: 2, got 1" in wrong.stderr
    finally:
        daemon.stop()
    engine = subprocess.run([sys.executable, "-m", "nst_engine", str(content), *map(str, styles), "-o",
                             str(tmp_path / "engine.png"), *masks, *common, "--weights", str(weights_file),
                             "--device", "cpu"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert engine.returncode == 0, engine.stderr
    through_daemon, alone = read_image(tmp_path / "daemon.png").rgb, read_image(tmp_path / "engine.png").rgb
    assert through_daemon.shape == alone.shape == (3, 27, 32)
    assert (through_daemon - alone).abs().max() <= 1.5 / 255
    unmasked = tmp_path / "unmasked.png"
    plain = subprocess.run([sys.executable, "-m", "nst_engine", str(content), *map(str, styles), "-o", str(unmasked),
                            *common, "--weights", str(weights_file), "--device", "cpu"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and (read_image(unmasked).rgb - alone).abs().max() > 4 / 255  # the masks mattered
