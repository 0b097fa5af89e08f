"""A real daemon process on loopback: every malformed input gets an error and the daemon keeps serving."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from daemon.client.contract import DaemonJobError, DaemonUnreachableError
from daemon.client.zeromq import DaemonClient
from daemon.wire.framing import Codec
from daemon.wire.limits import MessageCaps
from daemon.wire.messages import PROTOCOL_VERSION, DType, ErrorCode, Image, ImageSpec, MessageType

from .daemon_harness import (
    BAD_HEADERS,
    LONG_SETTINGS,
    REPO_ROOT,
    TINY_SETTINGS,
    image_array,
    random_curve_keys,
    rgb_image,
    start_daemon,
    wait_until,
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("daemon"), weights_file, "--queue", "2", "--max-image-side", "512")
    yield running
    running.stop()


@pytest.fixture
def raw(daemon):
    """A DEALER socket with the client's credentials, for sending whatever frames a test likes."""
    socket = daemon.raw_socket()
    yield socket
    socket.close(0)


def still_serving(daemon) -> None:
    with daemon.client() as fresh:
        assert fresh.status().pid == daemon.process.pid


CODEC = Codec()  # the default caps: MessageCaps.for_images()


def raw_reply(socket: zmq.Socket, codec: Codec = CODEC) -> dict:
    assert socket.poll(5000), "the daemon did not answer"
    message = codec.decode(socket.recv_multipart())
    assert message.type is MessageType.ERROR
    return message.body


def content_and_style():
    return rgb_image(40, 48, seed=1), rgb_image(40, 40, seed=2)


# -- running and talking ---------------------------------------------------------------------------
def test_connection_file_is_private_and_the_default_endpoint_a_private_socket(daemon):
    assert stat.S_IMODE(daemon.connection_file.stat().st_mode) == 0o600
    info = daemon.info
    assert info.endpoint.startswith("ipc://") and info.curve is None and info.pid == daemon.process.pid
    socket = Path(info.endpoint.removeprefix("ipc://"))
    assert stat.S_ISSOCK(socket.lstat().st_mode) and stat.S_IMODE(socket.lstat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(socket.parent.stat().st_mode) & 0o077 == 0


def test_default_connection_directory_is_0700(tmp_path, monkeypatch):
    from daemon.wire.connection import ConnectionInfo, connection_path, write_connection_file

    monkeypatch.delenv("NEURAL_STYLE_CONNECTION", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = write_connection_file(ConnectionInfo("ipc:///nowhere", pid=1))
    assert path == connection_path() and path.parent == tmp_path / "neural-style-gimp"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_hello_ping_and_status(client):
    assert client.hello().protocol_version == PROTOCOL_VERSION
    client.ping()
    status = client.status()
    assert status.devices[0]["model"] == "loaded" and status.devices[0]["device"] == "cpu"
    assert status.queue == [] and not status.running() and status.uptime_s > 0 and "torch" in status.versions
    memory = status.memory
    # The engine's memory model, applied to what is free now: L-BFGS's history costs it size.
    assert memory["available_bytes"] > 0
    assert memory["largest_size"]["adam"] > memory["largest_size"]["lbfgs"] > 0
    assert memory["largest_whole_size"]["adam"] > memory["largest_whole_size"]["lbfgs"] > 0
    assert memory["largest_size"]["lbfgs"] > memory["largest_whole_size"]["lbfgs"]  # tiles reach further


def test_a_job_returns_a_result_with_progress(client):
    content, style = content_and_style()
    progress = []
    result = client.stylize(content, [style], TINY_SETTINGS, on_progress=progress.append)
    assert result.image.spec == ImageSpec(32, 27, 3, DType.F32)
    pixels = image_array(result.image)
    assert np.isfinite(pixels).all() and 0 <= pixels.min() and pixels.max() <= 1
    assert [p.iteration for p in progress] == [1, 2, 3]


def test_preview_images_arrive(client):
    content, style = content_and_style()
    progress = []
    client.stylize(content, [style], {**TINY_SETTINGS, "iterations": 4, "optimizer": "adam"}, preview_every=2,
                   on_progress=progress.append)
    previews = [p for p in progress if p.preview is not None]
    assert [p.iteration for p in previews] == [2, 4]
    assert previews[0].preview.spec.width == 32


@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_pixel_format_is_accepted(client, dtype, channels):
    content = rgb_image(24, 24, seed=3, dtype=dtype, channels=channels)
    style = rgb_image(24, 24, seed=4, dtype=dtype, channels=channels)
    result = client.stylize(content, [style], {"size": 24, "iterations": 1, "scales": 1})
    assert result.image.spec.channels == 3


def test_same_style_again_hits_the_cache(client):
    content, style = content_and_style()
    before = client.status().style_cache
    client.stylize(content, [style], {**TINY_SETTINGS, "seed": 11})
    client.stylize(rgb_image(40, 48, seed=9), [style], {**TINY_SETTINGS, "seed": 12})
    after = client.status().style_cache
    assert after["hits"] > before["hits"] and after["entries"] >= 1


def test_warm_start_from_an_earlier_result(client):
    content, style = content_and_style()
    first = client.stylize(content, [style], TINY_SETTINGS)
    fresh, warm = [], []
    one_adam_step = {**TINY_SETTINGS, "iterations": 1, "optimizer": "adam"}  # reports the loss at the start
    client.stylize(content, [style], one_adam_step, on_progress=fresh.append)
    client.stylize(content, [style], one_adam_step, warm_start=first.job_id, on_progress=warm.append)
    # A fresh run starts at the content (content loss 0); a warm start at the earlier, stylised result.
    assert fresh[0].losses["content"] == 0.0 < warm[0].losses["content"]
    with pytest.raises(DaemonJobError, match="no kept result") as raised:
        client.stylize(content, [style], TINY_SETTINGS, warm_start="no-such-job")
    assert raised.value.code == "invalid_request"


@pytest.mark.parametrize(("dtype", "tolerance"), [(DType.U16, 0.5 / 65535 + 1e-7), (DType.F16, 2.0**-11)])
def test_compact_results_round_trip_within_their_format(client, dtype, tolerance):
    """The same seeded job as f32 and as the compact dtype: the compact result is the f32 one rounded to
    its format (u16: to the nearest of 65536 levels, finer than any u8 or u16 source's; f16: 11 bits),
    and the preview is scaled to at most the requested side."""
    content, style = content_and_style()
    settings = {**TINY_SETTINGS, "init": "noise", "seed": 7}
    full = client.stylize(content, [style], settings)
    previews = []
    compact = client.stylize(content, [style], settings, result_dtype=dtype, preview_every=1, preview_max_side=16,
                             on_progress=lambda progress: previews.append(progress.preview))
    assert compact.image.spec == ImageSpec(full.image.spec.width, full.image.spec.height, 3, dtype)
    assert len(compact.image.data) == full.image.spec.width * full.image.spec.height * 3 * 2  # half the bytes
    scale = 65535.0 if dtype is DType.U16 else 1.0
    difference = np.abs(image_array(compact.image).astype(np.float64) / scale
                        - image_array(full.image).astype(np.float64))
    assert difference.max() <= tolerance, difference.max()
    assert previews and all(p is not None and p.spec.dtype is dtype and max(p.spec.width, p.spec.height) == 16
                            for p in previews)


def test_a_result_dtype_that_is_not_offered_is_refused(client):
    content, style = content_and_style()
    with pytest.raises(DaemonJobError, match="result_dtype must be one of f32, u16, f16, got 'u8'"):
        client.stylize(content, [style], TINY_SETTINGS, result_dtype=DType.U8)


# -- malformed input -------------------------------------------------------------------------------


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_garbage_headers_get_invalid_request(daemon, raw, header):
    raw.send_multipart([header])
    assert raw_reply(raw)["code"] == ErrorCode.INVALID_REQUEST.value
    still_serving(daemon)


def test_unknown_type_and_unsupported_version(daemon, raw):
    for fields, code in (({"type": "teleport"}, ErrorCode.INVALID_REQUEST), ({"v": 99}, ErrorCode.VERSION_MISMATCH)):
        raw.send_multipart([msgpack.packb({"v": PROTOCOL_VERSION, "type": "ping", "body": {}, **fields})])
        assert raw_reply(raw)["code"] == code.value
    still_serving(daemon)


def test_a_frame_larger_than_the_maximum_message_size(daemon, raw):
    """libzmq's ZMQ_MAXMSGSIZE stops a frame one byte over the daemon's frame cap before anything reads
    it: the connection is dropped and no reply comes; a frame exactly at the cap still gets an answer
    (the daemon's own refusal of a part that large), so the cap, not the size class, is what stopped it."""
    from zmq.utils.monitor import recv_monitor_message

    caps = MessageCaps.for_images(512 * 512)  # the daemon runs with --max-image-side 512, over ipc
    header = Codec().encode(MessageType.SUBMIT, {})[0]
    at_cap = msgpack.packb({"v": PROTOCOL_VERSION, "type": "submit", "body": {}, "parts": [caps.socket_max_bytes]})
    raw.send_multipart([at_cap, bytes(caps.socket_max_bytes)])
    body = raw_reply(raw)
    assert (body["code"] == ErrorCode.INVALID_REQUEST.value
            and f"a binary part of {caps.socket_max_bytes} bytes" in body["message"])

    monitor = raw.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        over = bytes(caps.socket_max_bytes + 1)
        raw.send_multipart([header, over])
        assert monitor.poll(5000), "the daemon kept the connection of a peer that sent an oversized frame"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        assert not raw.poll(1000), "a reply came to an oversized frame"
    finally:
        raw.disable_monitor()
        monitor.close(0)
    still_serving(daemon)


def test_a_message_over_the_frame_cap_is_refused_unread(daemon, raw):
    raw.send_multipart([Codec().encode(MessageType.PING)[0], *[b"x"] * 100])
    body = raw_reply(raw)
    assert body["code"] == ErrorCode.INVALID_REQUEST.value and "the daemon's limits" in body["message"]
    still_serving(daemon)


def submit_raw(daemon, body: dict, frames: list[bytes]) -> dict:
    with daemon.client() as client:
        client._send(MessageType.SUBMIT, body, frames)
        reply = client._receive(5)
        assert reply is not None and reply.type is MessageType.ERROR
        return reply.body


def image_entry(role: str, width=8, height=8, channels=3, dtype="u8") -> dict:
    return {"role": role, "width": width, "height": height, "channels": channels, "dtype": dtype}


@pytest.mark.parametrize(
    ("body", "frames", "match"),
    [
        ({"images": [image_entry("content"), image_entry("style")]}, [bytes(192)],
         "2 images described but 1 binary frames"),
        ({"images": [image_entry("content"), image_entry("style")]}, [bytes(192), bytes(191)],
         r"images\[1\].*needs 192 bytes but its frame has 191"),
        ({"images": [image_entry("content", width=0), image_entry("style")]}, [b"", bytes(192)],
         r"images\[0\].width must be from 1"),
        ({"images": [image_entry("content", width=100000), image_entry("style")]}, [b"", bytes(192)],
         r"images\[0\].width must be from 1"),
        ({"images": [image_entry("content"), image_entry("style")], "settings": {"style_weight": float("nan")}},
         [bytes(192)] * 2, "settings.style_weight"),
        ({"images": [image_entry("content"), image_entry("style")], "settings": {"iterations": -1}},
         [bytes(192)] * 2, "settings.iterations"),
        ({"images": [image_entry("content"), image_entry("style")], "settings": {"iterations": "many"}},
         [bytes(192)] * 2, "settings.iterations must be an integer"),
        ({"images": "all of them"}, [], "images must list"),
        ({}, [], "images must list"),
        ({"images": [image_entry("content"), image_entry("content")]}, [bytes(192)] * 2, r"images\[1\].role"),
        ({"images": [image_entry("content"), image_entry("style")], "colour": 1}, [bytes(192)] * 2,
         "unknown field colour"),
    ],
)
def test_bad_submissions_name_the_field(daemon, body, frames, match):
    reply = submit_raw(daemon, body, frames)
    assert reply["code"] == ErrorCode.INVALID_REQUEST.value
    import re

    assert re.search(match, reply["message"]), reply["message"]
    still_serving(daemon)


def test_nan_pixels_are_refused_by_the_engine(client):
    nan = np.full((8, 8, 3), np.nan, dtype="<f4")
    content = Image(ImageSpec(8, 8, 3, DType.F32), memoryview(nan).cast("B"))
    with pytest.raises(DaemonJobError, match="NaN") as raised:
        client.stylize(content, [rgb_image(16, 16, 1)], {"size": 16, "iterations": 1, "scales": 1})
    assert raised.value.code == "invalid_request"


# -- jobs: faults, cancel, concurrency ---------------------------------------------------------------
def test_injected_out_of_memory_then_the_next_job_succeeds(client):
    content, style = content_and_style()
    with pytest.raises(DaemonJobError) as raised:
        client.stylize(content, [style], TINY_SETTINGS, fault="oom")
    assert raised.value.code == "out_of_memory" and raised.value.largest_size
    assert client.stylize(content, [style], TINY_SETTINGS).image.spec.width == 32


def test_an_exception_in_a_job_is_an_internal_error(client, daemon):
    content, style = content_and_style()
    with pytest.raises(DaemonJobError, match="injected") as raised:
        client.stylize(content, [style], TINY_SETTINGS, fault="exception")
    assert raised.value.code == "internal"
    assert "Traceback" in daemon.log()
    client.stylize(content, [style], TINY_SETTINGS)


def test_the_refusal_of_a_cancel_sent_too_late_is_not_taken_for_the_next_submits(daemon, client):
    # A job that ended between a progress report and the cancel it prompted (benchmarks/daemon_latency.py met
    # this: its next submit raised "cancel: no job … of yours"): the daemon refuses the cancel.
    client.cancel("0123456789abcdef")
    assert client.socket is not None and client.socket.poll(5000)  # that refusal waits unread
    content, style = content_and_style()
    job_id = client.submit(content, [style], TINY_SETTINGS)
    assert client.wait(job_id).image.spec.width > 0


@pytest.mark.parametrize("when", ["queued", "just after start", "mid-iteration"])
def test_cancel(daemon, client, when):
    content, style = content_and_style()
    blocker = None
    if when == "queued":
        blocker = daemon.client()
        blocker_id = blocker.submit(content, [style], LONG_SETTINGS)
    job_id = client.submit(content, [style], LONG_SETTINGS)
    cancel = threading.Event()
    if when == "mid-iteration":
        seen = []

        def on_progress(progress):
            seen.append(progress)
            if progress.iteration >= 3:
                cancel.set()
    else:
        on_progress = None
        cancel.set()
    with pytest.raises(DaemonJobError) as raised:
        client.wait(job_id, on_progress=on_progress, cancel=cancel)
    assert raised.value.code == "cancelled"
    if blocker is not None:
        blocker.cancel(blocker_id)
        with pytest.raises(DaemonJobError):
            blocker.wait(blocker_id)
        blocker.close()
    wait_until(lambda: not client.status().running(), 5)


def test_ping_is_answered_during_a_job(daemon, client):
    content, style = content_and_style()
    job_id = client.submit(content, [style], LONG_SETTINGS)
    try:
        with daemon.client() as other:
            wait_until(lambda: other.status().running(), 10)
            started = time.monotonic()
            other.ping()
            assert time.monotonic() - started < 1.0
    finally:
        client.cancel(job_id)
        with pytest.raises(DaemonJobError):
            client.wait(job_id)


def test_queue_limit_gives_busy(daemon):
    content, style = content_and_style()
    clients = [daemon.client() for _ in range(4)]
    job_ids = []
    try:
        for c in clients[:3]:  # one running, two queued (--queue 2)
            job_ids.append(c.submit(content, [style], LONG_SETTINGS))
        with pytest.raises(DaemonJobError) as raised:
            clients[3].submit(content, [style], LONG_SETTINGS)
        assert raised.value.code == "busy"
    finally:
        for c, job_id in zip(clients, job_ids):
            c.cancel(job_id)
            with pytest.raises(DaemonJobError):
                c.wait(job_id)
        for c in clients:
            c.close()


def test_a_job_an_idle_worker_is_about_to_take_does_not_count_against_the_queue():
    from daemon.server.jobs import JobQueue

    queue = JobQueue(capacity=2)
    assert [queue.put(object()) for _ in range(3)] == [0, 1, None]  # no worker: two may wait
    queue = JobQueue(capacity=2)
    taken = []
    worker = threading.Thread(target=lambda: taken.append(queue.take()))
    worker.start()
    wait_until(lambda: len(queue._holders) == 1, 5)
    with queue._condition:  # the worker cannot wake meanwhile: the three arrive before it takes one
        assert [queue.put(object()) for _ in range(4)] == [0, 1, 2, None]
    worker.join(5)
    assert len(taken) == 1 and len(queue.snapshot()) == 2


def test_three_concurrent_clients_receive_only_their_own_replies(daemon):
    results = {}
    errors = []

    def work(seed: int) -> None:
        try:
            with daemon.client() as own:
                content = rgb_image(32, 40, seed=seed)
                progress = []
                result = own.stylize(content, [rgb_image(32, 32, seed=10 + seed)],
                                     {"size": 32 + 8 * seed, "iterations": 2, "scales": 1}, on_progress=progress.append)
                results[seed] = (result, {p.job_id for p in progress})
        except Exception as error:  # reported below, with the daemon's log
            errors.append(f"client {seed}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, "\n".join(errors) + "\n" + daemon.log()[-3000:]
    assert sorted(results) == [0, 1, 2]
    for seed, (result, progress_ids) in results.items():
        assert progress_ids == {result.job_id}
        assert max(result.image.spec.width, result.image.spec.height) == 32 + 8 * seed


def test_a_client_that_never_reads_cannot_block_the_daemon(daemon):
    content, style = content_and_style()
    lazy = daemon.client()
    lazy_id = lazy.submit(content, [style], {**TINY_SETTINGS, "iterations": 50, "optimizer": "adam"}, preview_every=1)
    # It never reads and never heartbeats: the daemon keeps serving others and drops its job.
    with daemon.client() as other:
        other.stylize(content, [style], TINY_SETTINGS)
        wait_until(lambda: lazy_id not in str(other.status().queue) and not other.status().running(), 10)
    lazy.close()


KILLED_CLIENT = """
import sys, time
from daemon.client.zeromq import DaemonClient
from daemon.wire.connection import read_connection_file
from tests.daemon_harness import rgb_image, LONG_SETTINGS
client = DaemonClient(read_connection_file())
job = client.submit(rgb_image(40, 48, 1), [rgb_image(40, 40, 2)], LONG_SETTINGS)
print(job, flush=True)
client.wait(job)
"""


def test_a_killed_client_has_its_job_cancelled_within_2_seconds(daemon, client):
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(daemon.connection_file))
    process = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               text=True)
    job_id = process.stdout.readline().strip()
    # Another client's job: status shows it without its id, the daemon's log (-v) names it once it runs.
    wait_until(lambda: f"Job {job_id}: " in daemon.log() and client.status().running(), 30)
    process.kill()
    process.wait()
    started = time.monotonic()
    wait_until(lambda: not client.status().running(), 5)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    # Noticed from the closed connection, not from missed heartbeats (up to 2 s by themselves).
    assert f"disconnected: cancelling job {job_id}" in daemon.log()


def test_a_connected_client_that_stops_heartbeating_has_its_job_cancelled(daemon, client):
    with daemon.client() as hung:  # submits, then never waits: no heartbeats, connection still open
        job_id = hung.submit(rgb_image(40, 48, 1), [rgb_image(40, 40, 2)], LONG_SETTINGS)
        wait_until(lambda: f"went silent: cancelling job {job_id}" in daemon.log(), 10)
        wait_until(lambda: not client.status().running(), 5)


def test_clients_coming_and_going_leave_another_clients_job_running(daemon, client):
    """Closed connections are matched to clients by descriptor; reused descriptors must not cancel a job."""
    job_id = client.submit(rgb_image(40, 48, 1), [rgb_image(40, 40, 2)], {**TINY_SETTINGS, "iterations": 60})
    done = threading.Event()
    result: list = []
    waiter = threading.Thread(target=lambda: (result.append(client.wait(job_id)), done.set()))
    waiter.start()
    for _ in range(30):
        if done.is_set():
            break
        with daemon.client() as passing:
            passing.status()
    waiter.join(180)  # generous: the machine may be loaded
    assert result and result[0].job_id == job_id
    assert f"cancelling job {job_id}" not in daemon.log()


def test_thirty_jobs_with_random_cancels_and_failures_do_not_grow_memory(daemon, client):
    rng = np.random.default_rng(0)
    content, style = content_and_style()
    rss = []
    for number in range(30):
        kind = rng.choice(["ok", "cancel", "fault"])
        fault = "exception" if kind == "fault" else None
        job_id = client.submit(content, [rgb_image(40, 40, seed=number % 3)], TINY_SETTINGS, fault=fault)
        cancel = threading.Event()
        if kind == "cancel":
            cancel.set()
        try:
            client.wait(job_id, cancel=cancel)
        except DaemonJobError as error:
            assert error.code in ("cancelled", "internal")
        if number in (9, 29):
            rss.append(client.status().memory["rss_bytes"])
    assert rss[1] < rss[0] * 1.10 + 20 * 2**20, rss


# -- process life cycle (own daemons) ----------------------------------------------------------------
def test_a_second_daemon_does_not_take_over(daemon):
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(daemon.connection_file))
    result = subprocess.run([sys.executable, "-m", "daemon", "serve", "--device", "cpu", "--lazy"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 4 and "already running" in result.stderr
    assert daemon.info.pid == daemon.process.pid
    still_serving(daemon)


def test_status_names_the_device_before_the_model_is_loaded(tmp_path, weights_file):
    own = start_daemon(tmp_path, weights_file, "--lazy")  # the plug-in picks its preset from it
    try:
        with own.client() as fresh:
            status = fresh.status()
        assert status.devices[0]["model"] == "not_loaded" and status.devices[0]["device"] == "cpu"
    finally:
        own.stop()


def test_sigterm_exits_cleanly_and_removes_the_connection_file(tmp_path, weights_file):
    own = start_daemon(tmp_path, weights_file, "--lazy")
    own.process.send_signal(signal.SIGTERM)
    assert own.process.wait(15) == 0
    assert not own.connection_file.exists()


def test_a_stale_connection_file_is_replaced(tmp_path, weights_file):
    from daemon.wire.connection import ConnectionInfo, write_connection_file

    write_connection_file(ConnectionInfo("tcp://127.0.0.1:9", pid=2**22 + 12345, curve=random_curve_keys()),
                          tmp_path / "connection.json")
    own = start_daemon(tmp_path, weights_file, "--lazy")
    try:
        assert own.info.pid == own.process.pid
    finally:
        own.stop()


def test_a_killed_daemon_gives_the_client_a_clear_error_within_5_seconds(tmp_path, weights_file):
    own = start_daemon(tmp_path, weights_file)
    try:
        with own.client() as c:
            content, style = content_and_style()
            job_id = c.submit(content, [style], LONG_SETTINGS)
            killer = threading.Timer(1.0, own.process.kill)
            killer.start()
            started = time.monotonic()
            with pytest.raises(DaemonUnreachableError, match="stopped answering"):
                c.wait(job_id)
            assert time.monotonic() - started < 1.0 + 5.0
    finally:
        own.stop()


def test_client_refuses_a_protocol_mismatch(daemon):
    from dataclasses import replace

    with pytest.raises(Exception, match="protocol version"):
        DaemonClient(replace(daemon.info, protocol_version=PROTOCOL_VERSION + 1))
