"""Issue #27: a hostile invited client, against real daemon processes on loopback.  Findings 1 (previews a client
never reads), 3 (a flood of idle TCP connections), 8 (a routing id taken over by another key) and 9 (the shared
style cache's counts).  Invited clients dial the daemon with their own keys (``daemon invite``), as another machine
would; the connection flood runs as another user (uid 65534), from 127.0.0.x source addresses."""

from __future__ import annotations

import functools
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from daemon.client.contract import DaemonJobError
from daemon.client.zeromq import DaemonClient, configure_socket
from daemon.server.auth import HANDSHAKE_TIMEOUT_MS
from daemon.server.devices import REPLY_BYTES, ROUTER_SEND_HWM
from daemon.server.gate import SEND_HWM, memory_bytes_for
from daemon.server.peers import MAX_CONNECTIONS_PER_ADDRESS
from daemon.wire.connection import ConnectionInfo, read_connection_file
from daemon.wire.framing import Codec
from daemon.wire.limits import TCP_MAX_FRAME_BYTES, MessageCaps
from daemon.wire.messages import MessageType

from .daemon_harness import REPO_ROOT, TINY_SETTINGS, RunningDaemon, rgb_image, start_daemon, wait_until

LOOPBACK = "tcp://127.0.0.1:0"
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


# -- helpers (benchmarks/hostile_memory.py uses them too) --------------------------------------------------------
def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def invite(daemon: RunningDaemon, directory: Path, name: str) -> ConnectionInfo:
    """A new invited client's connection file (its own key pair), as ``daemon invite`` writes it."""
    output = private_dir(directory) / f"{name}.json"
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(daemon.connection_file))
    completed = subprocess.run([sys.executable, "-m", "daemon", "invite", "-o", str(output), "--name", name],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return read_connection_file(output)


def client_socket(info: ConnectionInfo, routing_id: bytes | None = None, receive_hwm: int = 1000) -> zmq.Socket:
    """A DEALER with ``info``'s keys; ``routing_id`` instead of a random one; ``receive_hwm`` messages at most
    buffered on this side (1: a client that does not read leaves what follows in the daemon)."""
    socket_ = zmq.Context.instance().socket(zmq.DEALER)
    configure_socket(socket_, info)
    if routing_id is not None:
        socket_.setsockopt(zmq.ROUTING_ID, routing_id)
    socket_.setsockopt(zmq.RCVHWM, receive_hwm)
    socket_.setsockopt(zmq.RCVBUF, 64 * 1024)  # the kernel's share on this side stays small too
    socket_.connect(info.endpoint)
    return socket_


def client_on(info: ConnectionInfo, routing_id: bytes | None = None, receive_hwm: int = 1000,
              attempts: int = 20) -> DaemonClient:
    """A client on :func:`client_socket` once the daemon answered its hello.  A routing id that another connection
    held a moment ago is free only once the daemon's libzmq has seen that connection close: try again."""
    client = DaemonClient(info, retries=0, timeout_s=2.0)
    for _ in range(attempts):
        client.close()
        client.socket = client_socket(info, routing_id, receive_hwm)
        client._send(MessageType.HELLO, {"protocol_version": info.protocol_version})
        reply = client._receive(2.0)
        if reply is not None and reply.type is MessageType.WELCOME:
            client.retries = 2
            return client
        time.sleep(0.2)
    raise AssertionError(f"no welcome on routing id {routing_id!r} in {attempts} attempts")


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM again from the current RSS (as root, or as the process's user)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def start_limited_daemon(soft: int, hard: int, *args, **options) -> RunningDaemon:
    """:func:`start_daemon` with the daemon under these limits on open files (set in the child before it runs the
    daemon: lowering them needs no privilege)."""
    limited = functools.partial(subprocess.Popen,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", limited)
        return start_daemon(*args, **options)


def open_files_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of a process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files limit for pid {pid}")


def connections_held_from(pid: int, address: str) -> int:
    """TCP connections from ``address`` that the process holds open (ESTABLISHED, on one of its descriptors)."""
    inodes = set()
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peer = f"{int.from_bytes(socket.inet_aton(address), 'little'):08X}"  # /proc/net/tcp's byte order
    held = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2].startswith(peer + ":") and fields[3] == "01" and fields[9] in inodes:
            held += 1
    return held


# An attacker holding up to ``count`` raw TCP connections from ``source``: it never sends a byte, and (with
# "refill") opens a new one for each the daemon closes, checking four times a second, until its stdin closes.
IDLE_FLOOD = r"""
import resource, select, socket, sys
host, port, source, count, refill = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 32, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

def opened():
    s = socket.socket()
    s.setblocking(False)
    s.bind((source, 0))
    s.connect_ex((host, port))
    return s

def closed_by_peer(s):
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError as error:
        return error.errno != 107  # ENOTCONN: still connecting

held, closed = [], 0
try:
    while len(held) < count:
        held.append(opened())
except OSError:
    pass  # its own descriptor limit
print(len(held), flush=True)
while not select.select([sys.stdin], [], [], 0.25)[0]:
    for index, s in enumerate(held):
        if s is not None and closed_by_peer(s):
            closed += 1
            s.close()
            held[index] = opened() if refill == "refill" else None
    print(closed, flush=True)
"""


def idle_flood(port: int, source: str, count: int, refill: bool) -> subprocess.Popen[str]:
    """The flood of :data:`IDLE_FLOOD` as uid 65534; it prints how many connections it opened, then every quarter
    of a second how many of them the daemon has closed so far."""
    flood = subprocess.Popen([*AS_NOBODY, sys.executable, "-c", IDLE_FLOOD, "127.0.0.1", str(port), source,
                              str(count), "refill" if refill else "hold"],
                             cwd="/", env={"PATH": os.environ["PATH"]}, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    opened = flood.stdout.readline()
    assert opened.strip().isdigit(), flood.stderr.read()
    return flood


def end_flood(flood: subprocess.Popen[str]) -> None:
    try:
        flood.communicate("", timeout=30)
    except subprocess.TimeoutExpired:
        flood.kill()
        flood.communicate()



@pytest.fixture(scope="module")
def invited_daemon(tmp_path_factory, weights_file):
    # A long client timeout: a test's client may pause between requests.
    running = start_daemon(private_dir(tmp_path_factory.mktemp("hostile") / "server"), weights_file, "--lazy",
                           "--endpoint", LOOPBACK, "--client-timeout", "30")
    yield running
    running.stop()


# -- 1. previews a client never reads -----------------------------------------------------------------------------
PREVIEW_SIDE = 1024  # previews and the result at this output size, f32 RGB: 12 MiB each
PREVIEW_BYTES = PREVIEW_SIDE * PREVIEW_SIDE * 3 * 4
FLOOD_ITERATIONS = 60  # one preview each


def preview_flood(daemon: RunningDaemon, info: ConnectionInfo, side: int, iterations: int) -> dict[str, int]:
    """An invited client asks for a preview every iteration at side×side and reads nothing (heartbeating all the
    while) until its job is done; then it reads.  The daemon's and its TCP gate's RSS before and their peaks
    meanwhile (VmHWM), the previews the client then received and the last one's iteration."""
    settings = {"size": 32, "iterations": iterations, "scales": 1, "optimizer": "adam"}
    content, style = rgb_image(32, 32, 1), rgb_image(32, 32, 2)
    options = {"preview_every": 1, "output_size": (side, side)}
    pid, gate = daemon.process.pid, daemon.gate_pid()
    with DaemonClient(info) as reader:  # the same job, read: what it needs anyway is in the baseline
        reader.stylize(content, [style], settings, **options)
    with daemon.client() as observer:
        done = observer.status().jobs_done
        before, gate_before = proc_status(pid, "VmRSS"), proc_status(gate, "VmRSS")
        reset_peak_rss(pid)
        reset_peak_rss(gate)
        flood = client_on(info, receive_hwm=1)
        job_id = flood.submit(content, [style], settings, **options)
        deadline = time.monotonic() + 600
        while observer.status().jobs_done == done:
            assert time.monotonic() < deadline, "the job did not finish"
            flood._send(MessageType.HEARTBEAT)  # a live client, just not reading
            time.sleep(0.5)
        time.sleep(1.0)  # what the result adds
        peak, gate_peak = proc_status(pid, "VmHWM"), proc_status(gate, "VmHWM")
    previews = []
    result = flood.wait(job_id, on_progress=previews.append)
    flood.close()
    assert result.image.spec.width == side
    return {"before": before, "peak": peak, "gate_before": gate_before, "gate_peak": gate_peak,
            "previews": len(previews), "last_iteration": previews[-1].iteration if previews else 0}


def test_a_client_that_never_reads_previews_holds_a_bounded_amount_of_daemon_memory(tmp_path, weights_file):
    """Per connection the daemon holds what libzmq takes (ROUTER_SEND_HWM messages), a job's newest preview (a
    newer one replaces it) and its result, replies within REPLY_BYTES, and the preview the worker is making."""
    daemon = start_daemon(private_dir(tmp_path / "server"), weights_file, "--endpoint", LOOPBACK,
                          "--client-timeout", "60")
    try:
        figures = preview_flood(daemon, invite(daemon, tmp_path / "client", "flood"), PREVIEW_SIDE,
                                FLOOD_ITERATIONS)
        bound = (ROUTER_SEND_HWM + 4) * PREVIEW_BYTES + REPLY_BYTES + 64 * 2**20
        grown = figures["peak"] - figures["before"]
        assert grown < bound, f"RSS grew by {grown / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB): {figures}"
        # The gate holds per connection an answer on its way, one its daemon link takes and what libzmq takes.
        gate_grown = figures["gate_peak"] - figures["gate_before"]
        gate_bound = (SEND_HWM + 2) * PREVIEW_BYTES + 64 * 2**20
        assert gate_grown < gate_bound, f"the gate grew by {gate_grown / 2**20:.0f} MiB: {figures}"
        # Read at last: a few previews (those libzmq, the gate and the kernel held), the newest last, then the result.
        assert figures["last_iteration"] == FLOOD_ITERATIONS
        assert figures["previews"] <= ROUTER_SEND_HWM + SEND_HWM + 6, figures
    finally:
        daemon.stop()


# -- 2. one multipart message of many allowed frames --------------------------------------------------------------
GATED_SIDE = 512  # --max-image-side: a message cap of 12 MiB, a gate limit of 88 MiB beyond its working set


def send_frames(info: ConnectionInfo, megabytes: int) -> zmq.Socket:
    """One ping message followed by ``megabytes`` of frames, each within the frame cap."""
    sender = client_socket(info)
    frame = bytes(TCP_MAX_FRAME_BYTES)
    sender.send_multipart([Codec().encode(MessageType.PING)[0], *[frame] * (megabytes * 2**20 // len(frame))],
                          copy=False)
    return sender


def test_a_message_beyond_the_caps_is_held_by_the_gate_within_its_limit_never_by_the_daemon(tmp_path, weights_file):
    """libzmq holds a whole multipart message before anyone sees it; the TCP gate holds it, under its memory limit,
    and the daemon only what the gate forwards: messages within the caps."""
    daemon = start_daemon(private_dir(tmp_path / "server"), weights_file, "--lazy", "--endpoint", LOOPBACK,
                          "--max-image-side", str(GATED_SIDE))
    caps = MessageCaps.for_images(GATED_SIDE**2, TCP_MAX_FRAME_BYTES)
    try:
        invited = invite(daemon, tmp_path / "client", "sender")
        pid = daemon.process.pid
        before = proc_status(pid, "VmRSS")
        reset_peak_rss(pid)
        # Beyond the caps, within the gate's memory: refused with an answer.
        over = send_frames(invited, caps.max_message_bytes // 2**20 + 8)
        assert over.poll(60_000), "no answer to a message beyond the caps"
        reply = Codec().decode(over.recv_multipart())
        assert reply.type is MessageType.ERROR and "limits" in reply.body["message"], reply
        over.close(0)
        # Beyond the gate's memory: the gate drops it (or ends and is started again); no answer comes.
        endless = send_frames(invited, 3 * memory_bytes_for(caps) // 2**20)
        assert not endless.poll(20_000)
        endless.close(0)
        grown = proc_status(pid, "VmHWM") - before
        assert grown < 16 * 2**20, f"the daemon grew by {grown / 2**20:.0f} MiB"
        gate = daemon.gate_pid()
        assert proc_status(gate, "VmHWM") < memory_bytes_for(caps) + 64 * 2**20
        with connect_invited(invited) as client:  # TCP still served
            client.ping()
    finally:
        daemon.stop()


def test_a_killed_gate_is_started_again_on_its_endpoint_and_its_clients_jobs_end_clearly(tmp_path, weights_file):
    daemon = start_daemon(private_dir(tmp_path / "server"), weights_file, "--endpoint", LOOPBACK)
    try:
        invited = invite(daemon, tmp_path / "client", "laptop")
        gate = daemon.gate_pid()
        with connect_invited(invited) as client:
            job_id = client.submit(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], TINY_SETTINGS,
                                   fault="slow", preview_every=1)
            os.kill(gate, signal.SIGKILL)
            # Silent meanwhile (as while GIMP paints): the job's cancellation is sent while this client has no
            # connection, and it comes back only with its next heartbeat, on a new one.
            time.sleep(3)
            outcome: list[BaseException] = []
            waiting = threading.Thread(target=lambda: outcome.append(pytest.raises(DaemonJobError, client.wait,
                                                                                   job_id).value), daemon=True)
            waiting.start()
            waiting.join(30)
            assert outcome, "the job's outcome never reached its client"
            assert "disconnected" in str(outcome[0])  # not a bare "cancelled": the user cancelled nothing
        wait_until(lambda: daemon.gate_pid() != gate, 10, "a new gate")
        with connect_invited(invited) as client:  # the same endpoint, the same keys
            client.ping()
        assert "TCP gate" in daemon.log() and "starting it again" in daemon.log()
    finally:
        daemon.stop()


# -- 3. a flood of idle TCP connections -----------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="the flood runs as uid 65534, which needs root")
def test_an_idle_connection_flood_leaves_room_for_invited_clients(tmp_path, weights_file):
    daemon = start_limited_daemon(256, 1024, private_dir(tmp_path / "server"), weights_file, "--lazy",
                                  "--endpoint", LOOPBACK, "--client-timeout", "30")
    pid, port = daemon.gate_pid(), int(daemon.info.endpoint.rsplit(":", 1)[1])  # the gate holds TCP connections
    invited = invite(daemon, tmp_path / "client", "laptop")
    floods = []
    try:
        rss_before = proc_status(pid, "VmRSS")
        floods.append(idle_flood(port, "127.0.0.2", 1000, refill=True))
        samples = []
        for _ in range(3):  # legitimate pings get through while the flood holds
            with connect_invited(invited) as client:
                client.ping()
            for _ in range(10):
                samples.append(connections_held_from(pid, "127.0.0.2"))
                time.sleep(0.1)
        held = statistics.median(samples)
        assert held <= MAX_CONNECTIONS_PER_ADDRESS + 16, f"the daemon held {held} of its connections: {samples}"
        assert proc_status(pid, "VmRSS") - rss_before < 64 * 2**20
        # Connections that never start a handshake are dropped once the handshake time is up.
        stale = idle_flood(port, "127.0.0.3", 8, refill=False)
        floods.append(stale)
        wait_until(lambda: int(stale.stdout.readline() or 0) == 8, HANDSHAKE_TIMEOUT_MS / 1000 + 10,
                   "the daemon drops 8 connections that never start a handshake")
        assert open_files_limit(pid) == (1024, 1024)  # raised to the hard limit at start
    finally:
        for flood in floods:
            end_flood(flood)
        try:
            assert daemon.process.poll() is None, daemon.log()[-3000:]
            with connect_invited(invited) as client:
                client.ping()
        finally:
            daemon.stop()


def connect_invited(info: ConnectionInfo) -> DaemonClient:
    """An invited client once the daemon answered its hello, retrying a few times (5 s each)."""
    return client_on(info, attempts=6)


# -- 8. jobs belong to the key, not to a routing id -----------------------------------------------------------------
def test_a_routing_id_taken_over_by_another_key_owns_none_of_the_first_clients_jobs(invited_daemon, tmp_path):
    daemon = invited_daemon
    owner, other = invite(daemon, tmp_path, "owner"), invite(daemon, tmp_path, "other")
    routing_id = b"c" + os.urandom(15)
    content, style = rgb_image(40, 48, 1), rgb_image(40, 40, 2)
    first = client_on(owner, routing_id)
    finished = first.stylize(content, [style], TINY_SETTINGS).job_id
    first.close()

    intruder = client_on(other, routing_id)  # the owner's routing id, once the owner has left
    try:
        with pytest.raises(DaemonJobError, match="no kept result of yours") as refused:
            intruder.stylize(content, [style], TINY_SETTINGS, warm_start=finished)
        assert refused.value.code == "invalid_request"
        intruder._send(MessageType.CANCEL, {"job_id": finished})
        reply = intruder._receive(5)
        while reply is not None and reply.type is MessageType.PONG:  # to the heartbeats while it waited
            reply = intruder._receive(5)
        assert reply is not None and reply.type is MessageType.ERROR and "of yours" in reply.body["message"]
    finally:
        intruder.close()

    back = client_on(owner, routing_id)  # its owner, on the same routing id with its own key, still can
    try:
        back.stylize(content, [style], TINY_SETTINGS, warm_start=finished)
    finally:
        back.close()


# -- 9. the style cache's counts are per client ---------------------------------------------------------------------
def style_cache_view(client: DaemonClient) -> tuple[dict[str, int], list[int]]:
    status = client.status()
    return status.style_cache, [device["style_cache_entries"] for device in status.devices]


def test_an_invited_client_cannot_tell_from_status_which_styles_another_used(invited_daemon, tmp_path):
    daemon = invited_daemon
    first, second = invite(daemon, tmp_path, "first"), invite(daemon, tmp_path, "second")
    style = rgb_image(40, 40, 77)  # a style no other test uses
    with DaemonClient(second) as watcher, DaemonClient(first) as user, daemon.client() as local:
        seen_before, local_before = style_cache_view(watcher), style_cache_view(local)
        user.stylize(rgb_image(40, 48, 1), [style], TINY_SETTINGS)
        assert style_cache_view(watcher) == seen_before  # nothing of the other client's use shows
        own, _ = style_cache_view(user)
        assert own["misses"] >= 1 and own["entries"] >= 1 and own["bytes"] > 0  # a client sees its own
        everything, entries = style_cache_view(local)  # the daemon's own user sees all of it
        assert everything["entries"] > local_before[0]["entries"] and sum(entries) == everything["entries"]
        # The same style, sent by the watcher: its own first use, computed again rather than found.
        watcher.stylize(rgb_image(40, 48, 1), [style], TINY_SETTINGS)
        after, _ = style_cache_view(watcher)
        assert after["hits"] == seen_before[0]["hits"] and after["misses"] > seen_before[0]["misses"]
