"""The pipe bridge that stands in for pyzmq when GIMP's Python has no wheels for it.

The "plug-in side" runs in a subprocess in which zmq and msgpack cannot be imported, as in such
a GIMP; it reaches a real daemon through a real bridge process.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.client.bridge import read_message, write_message

from .daemon_harness import REPO_ROOT, start_daemon

PLUGIN_SIDE = r"""
import json, sys, threading
for name in ("zmq", "msgpack"):
    sys.modules[name] = None  # import fails, as in a GIMP whose Python has no wheels for them
from array import array
from daemon.client.bridge import connect_any
from daemon.wire.messages import DType, Image, ImageSpec

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

client = connect_any(start_command=None, bridge_command=[sys.executable, "-m", "daemon.client.bridge"],
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
        assert client.status().jobs_done >= 1


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
        assert client.status().running()
        process.send_signal(signal.SIGKILL)  # what GIMP does to a plug-in whose progress is cancelled
        killed = time.monotonic()
        while client.status().running():
            assert time.monotonic() - killed < 5, "the daemon kept running the job"
            time.sleep(0.05)
        assert time.monotonic() - killed < 2.0
        assert client.status().queue == []
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


@pytest.mark.parametrize("damage", ["truncated frame", "truncated header", "huge header", "no frame list",
                                    "nested too deeply"])
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
        body = json.dumps({"event": "result"}).encode() if damage == "no frame list" else NESTED_HEADER
        data = len(body).to_bytes(4, "little") + body
    with pytest.raises(ValueError):
        read_message(io.BytesIO(data))


NESTED_HEADER = b'{"op": "submit", "frames": [], "submit": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _submit_fields(**changes) -> tuple[dict, list]:
    from daemon.client.contract import submit_request

    request, frames = submit_request(rgba(40, 24, 1), [rgba(32, 32, 2)], {"size": 32, "iterations": 2})
    return {"op": "submit", "submit": {**request.to_wire(), **changes}}, frames


MALFORMED_REQUESTS = {  # what each must be refused for, in the error event's message
    "deeply nested JSON": (lambda: NESTED_HEADER, "nests too deeply"),
    "a 10^30 integer": (lambda: _submit_fields(settings={"style_blend_weights": [10**30]}),
                        "settings.style_blend_weights must be a list of 1 to 64 numbers from 0 to 1e+12"),
    'result_dtype "f64"': (lambda: _submit_fields(result_dtype="f64"), "result_dtype must be one of f32, u16, f16"),
    "options sent as a list": (lambda: ({"op": "submit", "submit": list(_submit_fields()[0]["submit"].items())}, []),
                               "submit must be an object"),
}


@pytest.mark.parametrize("case", MALFORMED_REQUESTS)
def test_a_malformed_request_gets_one_error_event_and_exit_status_2(daemon, case):
    """A real bridge process, with a daemon it could reach: each request is refused before anything is sent."""
    make, reason = MALFORMED_REQUESTS[case]
    request = make()
    stream = io.BytesIO()
    if isinstance(request, bytes):
        stream.write(len(request).to_bytes(4, "little") + request)
    else:
        write_message(stream, *request)
    data = stream.getvalue()
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(daemon.connection_file))
    bridge = subprocess.run([sys.executable, "-m", "daemon.client.bridge"], input=data, capture_output=True,
                            cwd=REPO_ROOT, env=env, timeout=60, check=False)
    fields = _only_event(bridge)
    assert reason in fields["message"] and fields["message"].startswith("The bridge received a malformed request")
    assert bridge.returncode == 2
    assert b"Traceback" not in bridge.stderr, bridge.stderr.decode(errors="replace")


def test_an_unexpected_failure_in_the_bridge_is_still_one_error_event():
    """A bug (planted here) reaches the plug-in as one error event; the traceback stays on standard error."""
    planted = ("import sys\nimport daemon.client.bridge as bridge\n"
               "def broken(fields, frames): raise KeyError('planted')\n"
               "bridge._parse_request = broken\nsys.exit(bridge.main())")
    stream = io.BytesIO()
    write_message(stream, {"op": "status"})
    bridge = subprocess.run([sys.executable, "-c", planted], input=stream.getvalue(), capture_output=True,
                            cwd=REPO_ROOT, timeout=60, check=False)
    fields = _only_event(bridge)
    assert fields["kind"] == "daemon" and fields["message"].startswith("The bridge to the daemon failed (KeyError)")
    assert bridge.returncode == 1 and b"KeyError: 'planted'" in bridge.stderr


def _only_event(bridge: subprocess.CompletedProcess) -> dict:
    """The bridge's one event, an error whose message is one line."""
    events = io.BytesIO(bridge.stdout)
    message = read_message(events)
    assert message is not None, f"no event; the bridge's error output: {bridge.stderr.decode(errors='replace')}"
    assert read_message(events) is None, "more than one event"
    fields, frames = message
    assert fields["event"] == "error" and frames == [] and "\n" not in fields["message"]
    return fields


# -- the same calls as DaemonClient, through the bridge -------------------------------------------------------
@pytest.fixture
def bridge(daemon, monkeypatch):
    from daemon.client.bridge import BridgeClient

    monkeypatch.setenv("NEURAL_STYLE_CONNECTION", str(daemon.connection_file))
    with BridgeClient([sys.executable, "-m", "daemon.client.bridge"]) as client:
        yield client


def grey(width: int, height: int, value: float = 1.0):
    from array import array

    from daemon.wire.messages import DType, Image, ImageSpec

    return Image(ImageSpec(width, height, 1, DType.F32), array("f", [value] * (width * height)).tobytes())


def rgba(width: int, height: int, seed: int):
    from array import array

    from daemon.wire.messages import DType, Image, ImageSpec

    return Image(ImageSpec(width, height, 4, DType.F32),
                 array("f", (((i * 7919 + seed) % 1000) / 1000.0 for i in range(width * height * 4))).tobytes())


def test_both_clients_keep_the_client_protocol(daemon, bridge):
    from daemon.client.contract import StyleClient

    with daemon.client() as direct:
        assert isinstance(direct, StyleClient) and isinstance(bridge, StyleClient)


def test_status_and_estimate_through_the_bridge_are_the_daemons(daemon, bridge):
    from dataclasses import replace

    from daemon.wire.messages import EstimateReply, StatusReply

    status = bridge.status()
    assert isinstance(status, StatusReply) and status.pid == daemon.process.pid
    through_bridge = bridge.estimate({"size": 64, "scales": 1}, 80, 40, style_sizes=[(32, 32)])
    with daemon.client() as direct:
        directly = direct.estimate({"size": 64, "scales": 1}, 80, 40, style_sizes=[(32, 32)])
    # The same but for what depends on the memory free at that moment.
    assert (replace(through_bridge, available_bytes=0, largest_size=0)
            == replace(directly, available_bytes=0, largest_size=0))
    assert (isinstance(through_bridge, EstimateReply)
            and (through_bridge.output_width, through_bridge.output_height) == (64, 32))


def test_masks_travel_through_the_bridge_and_a_bad_one_is_a_job_error(bridge):
    from daemon.client.contract import DaemonJobError

    settings = {"size": 32, "iterations": 2, "scales": 1}
    result = bridge.stylize(rgba(40, 24, 1), [rgba(32, 32, 2)], settings, regions=[grey(40, 24)],
                            style_masks=[grey(32, 32, 0.5)])
    assert (result.image.spec.width, result.image.spec.height) == (32, 19)
    with pytest.raises(DaemonJobError,
                       match=r"regions\[0\]\) is 32×32 but must be the size of the content, 40×24") as raised:
        bridge.stylize(rgba(40, 24, 1), [rgba(32, 32, 2)], settings, regions=[grey(32, 32)])
    assert raised.value.code == "invalid_request"


def test_cancel_through_the_bridge_means_what_it_means_directly(daemon, bridge):
    from daemon.client.contract import DaemonJobError

    job_id = bridge.submit(rgba(48, 48, 1), [rgba(32, 32, 2)], {"size": 48, "iterations": 100_000, "scales": 1,
                                                                "optimizer": "adam"})
    bridge.cancel(job_id)
    started = time.monotonic()
    with pytest.raises(DaemonJobError) as raised:
        bridge.wait(job_id)
    assert raised.value.code == "cancelled" and time.monotonic() - started < 5
    with daemon.client() as client:
        assert not client.status().running()


def test_both_clients_count_the_pixel_bytes_they_send_and_compact_frames_pass_through(daemon, bridge):
    """u8 content, a u16 style and a u8 region, a u16 result: each client reports the bytes of exactly those
    frames (a quarter and a half of what float32 would take), and both get the same u16 result."""
    from array import array

    from daemon.wire.messages import DType, Image, ImageSpec

    content = Image(ImageSpec(40, 24, 4, DType.U8),
                    array("B", ((i * 7919) % 256 for i in range(40 * 24 * 4))).tobytes())
    style = Image(ImageSpec(32, 32, 4, DType.U16),
                  array("H", ((i * 104729) % 65536 for i in range(32 * 32 * 4))).tobytes())
    region = Image(ImageSpec(40, 24, 1, DType.U8), bytes([255] * (20 * 24) + [0] * (20 * 24)))
    expected = 40 * 24 * 4 * 1 + 32 * 32 * 4 * 2 + 40 * 24 * 1
    assert expected == (40 * 24 * 4 * 4) // 4 + (32 * 32 * 4 * 4) // 2 + (40 * 24 * 4) // 4
    settings = {"size": 32, "iterations": 2, "scales": 1, "seed": 3}
    with daemon.client() as direct:
        directly = direct.stylize(content, [style], settings, regions=[region], result_dtype=DType.U16)
    through_bridge = bridge.stylize(content, [style], settings, regions=[region], result_dtype=DType.U16)
    for result in (directly, through_bridge):
        assert result.image_bytes_sent == expected
        assert result.image.spec == ImageSpec(32, 19, 3, DType.U16)
    assert bytes(through_bridge.image.data) == bytes(directly.image.data)


def test_the_plugin_side_sends_the_very_submit_record_and_frames_the_zeromq_client_would(tmp_path):
    """The bridge relays a ``Submit``: the plug-in writes submit_request's body and frames, which the bridge
    side reads back as that same record."""
    from daemon.client.bridge import BridgeClient, _parse_request
    from daemon.client.contract import DaemonUnreachableError, submit_request
    from daemon.wire.messages import DType

    recorded = tmp_path / "request.pickle"
    record_one = (f"import pickle, sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
                  "from daemon.client.bridge import read_message\n"
                  f"with open({str(recorded)!r}, 'wb') as file: pickle.dump(read_message(sys.stdin.buffer), file)")
    content, style, region = rgba(40, 24, 1), rgba(32, 32, 2), grey(40, 24)
    options = {"regions": [region], "output_size": (80, 48), "result_dtype": DType.U16, "preview_every": 2}
    with BridgeClient([sys.executable, "-c", record_one], start_command=["start-it"]) as client:
        with pytest.raises(DaemonUnreachableError, match="stopped without a result"):
            client.submit(content, [style], {"size": 32}, **options)
    fields, frames = pickle.loads(recorded.read_bytes())
    request, expected_frames = submit_request(content, [style], {"size": 32}, **options)
    assert fields == {"op": "submit", "submit": request.to_wire(), "start_command": ["start-it"],
                      "frames": [len(frame) for frame in expected_frames]}
    assert frames == [bytes(frame) for frame in expected_frames]
    assert _parse_request(fields, frames).record == request
