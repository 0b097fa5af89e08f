"""The pipe bridge that stands in for pyzmq when GIMP's Python has no wheels for it.

The "plug-in side" runs in a subprocess in which zmq, msgpack and blake3 cannot be imported, as in such
a GIMP; it reaches a real daemon through a real bridge process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.bridge import read_message, write_message

from .daemon_harness import REPO_ROOT, start_daemon

PLUGIN_SIDE = r"""
import json, sys, threading
for name in ("zmq", "msgpack", "blake3"):
    sys.modules[name] = None  # import fails, as in a GIMP whose Python has no wheels for them
from array import array
from daemon.bridge import connect_any
from daemon.records import DType, Image, ImageSpec

settings = json.loads(sys.argv[1])
width, height = 40, 24
pixels = array("f", ((i * 7919 % 1000) / 1000.0 for i in range(width * height * 4))).tobytes()
style = array("f", ((i * 104729 % 997) / 997.0 for i in range(32 * 32 * 4))).tobytes()
events = {"waits": [], "progress": 0, "previews": 0}

def on_progress(progress):
    events["progress"] += 1
    events.setdefault("iterations", []).append(progress.iteration)
    events["previews"] += progress.preview is not None
    if events["progress"] == 1:
        print(json.dumps({"started": True, "bridge_pid": client.process.pid}), flush=True)

client = connect_any(start_command=None, bridge_command=[sys.executable, "-m", "daemon.bridge"],
                     on_wait=events["waits"].append)
try:
    with client:
        result = client.stylize(Image(ImageSpec(width, height, 4, DType.F32), pixels),
                                [Image(ImageSpec(32, 32, 4, DType.F32), style)], settings,
                                on_progress=on_progress, cancel=threading.Event(),
                                output_size=(width, height), preview_every=1)
    outcome = {"spec": result.image.spec.to_wire(), "bytes": len(result.image.data), "job_id": result.job_id}
except Exception as error:
    outcome = {"error": type(error).__name__, "message": str(error)}
outcome.update(events, transport=client.transport)
print(json.dumps(outcome), flush=True)
"""


def plugin_side(settings: dict, connection_file: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    return subprocess.Popen([sys.executable, "-c", PLUGIN_SIDE, json.dumps(settings)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("bridge-daemon"), weights_file)
    yield running
    running.stop()


def test_a_plugin_without_pyzmq_runs_a_job_through_the_bridge(daemon):
    process = plugin_side({"size": 32, "iterations": 3, "scales": 1, "optimizer": "adam"}, daemon.connection_file)
    out, _ = process.communicate(timeout=120)
    outcome = json.loads(out.splitlines()[-1])
    assert "error" not in outcome, outcome
    assert outcome["transport"] == "bridge"
    assert outcome["spec"] == {"width": 40, "height": 24, "channels": 3, "dtype": "f32"}
    assert outcome["bytes"] == 40 * 24 * 3 * 4
    assert outcome["iterations"] == [1, 2, 3] and outcome["previews"] == 3
    with daemon.client() as client:
        assert client.status()["jobs_done"] >= 1


def test_the_bridge_passes_on_a_clear_error(tmp_path):
    process = plugin_side({"size": 32, "iterations": 3}, tmp_path / "no-daemon.json")
    out, _ = process.communicate(timeout=60)
    outcome = json.loads(out.splitlines()[-1])
    assert outcome["error"] == "DaemonUnreachableError", outcome
    assert "daemon is not running" in outcome["message"] and "python -m daemon start" in outcome["message"]


def test_the_bridge_passes_on_invalid_settings_as_a_job_error(daemon):
    process = plugin_side({"size": 32, "iterations": -1}, daemon.connection_file)
    out, _ = process.communicate(timeout=60)
    outcome = json.loads(out.splitlines()[-1])
    assert outcome["error"] == "DaemonJobError" and "settings.iterations" in outcome["message"], outcome


def test_killing_the_plugin_side_stops_its_job_within_2_seconds(daemon):
    process = plugin_side({"size": 48, "iterations": 100_000, "scales": 1, "optimizer": "adam"},
                          daemon.connection_file)
    started = json.loads(process.stdout.readline())
    assert started["started"]
    with daemon.client() as client:
        assert client.status()["running"] is not None
        process.send_signal(signal.SIGKILL)  # what GIMP does to a plug-in whose progress is cancelled
        killed = time.monotonic()
        while client.status()["running"] is not None:
            assert time.monotonic() - killed < 5, "the daemon kept running the job"
            time.sleep(0.05)
        assert time.monotonic() - killed < 2.0
        assert client.status()["queue"] == []
    process.wait(10)
    deadline = time.monotonic() + 10
    while _alive(started["bridge_pid"]):
        assert time.monotonic() < deadline, "the bridge process outlived its plug-in"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


# ---------------------------------------------------------------------------------------------------
# Pipe framing
# ---------------------------------------------------------------------------------------------------
def test_pipe_messages_round_trip_with_frames():
    stream = io.BytesIO()
    write_message(stream, {"event": "progress", "n": 1}, [b"abc", memoryview(b"")])
    write_message(stream, {"event": "result"})
    stream.seek(0)
    assert read_message(stream) == ({"event": "progress", "n": 1, "frames": [3, 0]}, [b"abc", b""])
    assert read_message(stream) == ({"event": "result", "frames": []}, [])
    assert read_message(stream) is None  # a clean end


@pytest.mark.parametrize("damage", ["truncated frame", "truncated header", "huge header", "no frame list"])
def test_malformed_pipe_messages_are_refused(damage):
    stream = io.BytesIO()
    write_message(stream, {"event": "result"}, [b"pixels"])
    data = stream.getvalue()
    if damage == "truncated frame":
        data = data[:-2]
    elif damage == "truncated header":
        data = data[:6]
    elif damage == "huge header":
        data = (1 << 30).to_bytes(4, "little") + data[4:]
    else:
        body = json.dumps({"event": "result"}).encode()
        data = len(body).to_bytes(4, "little") + body
    with pytest.raises(ValueError):
        read_message(io.BytesIO(data))
