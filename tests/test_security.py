"""Issue #12: one test per finding, each against real daemon processes.  The attacker runs as another
user (uid 65534, through setpriv) and knows what another local user can learn: the TCP port (from ss)
and, as the worst case, the daemon's CURVE public key; not the files in the victim's private directory.
docs/security.md maps each mechanism to these tests."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import zmq

from daemon.client.bridge import read_message
from daemon.client.contract import DaemonError, DaemonJobError
from daemon.client.zeromq import DaemonClient, connect
from daemon.server.auth import KeyPair, make_curve_server
from daemon.server.lifecycle import DaemonLock, LockHeldError, ProcessIdentity, probe, terminate
from daemon.wire.connection import ConnectionInfo, read_connection_file, write_connection_file
from daemon.wire.framing import Codec
from daemon.wire.messages import PROTOCOL_VERSION, ErrorCode, MessageType

from .daemon_harness import (
    LONG_SETTINGS,
    REPO_ROOT,
    TCP,
    TINY_SETTINGS,
    random_curve_keys,
    rgb_image,
    start_daemon,
    wait_until,
)

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

if os.geteuid() != 0:
    pytest.skip("the attacker tests drop to uid 65534, which needs root (CI runs as root)", allow_module_level=True)


def attacker(code: str, *args: str) -> subprocess.Popen[str]:
    """``code`` run by Python as uid 65534, without this user's environment or working directory."""
    return subprocess.Popen([*AS_NOBODY, sys.executable, "-c", code, *args], cwd="/",
                            env={"PATH": os.environ["PATH"]}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def release(process: subprocess.Popen[str]) -> str:
    """End an attacker that holds its connections until its stdin closes; its stderr."""
    try:
        _, err = process.communicate("", timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def daemon_cli(*args: str, connection_file: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)



def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def serving_daemons(connection_file: Path) -> list[int]:
    """Pids of ``python -m daemon serve`` processes for ``connection_file`` (read from /proc, as root)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"daemon" in command and b"serve" in command and \
                f"NEURAL_STYLE_CONNECTION={connection_file}".encode() in environment:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def ipc_daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("security-ipc"), weights_file, "--lazy", "--max-image-side", "16384")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tcp_daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("security-tcp"), weights_file, "--lazy", "--max-image-side", "16384",
                           "--endpoint", TCP)
    yield running
    running.stop()


@pytest.fixture(params=["ipc", "tcp"])
def daemon(request):
    """Each transport's daemon in turn: the default (ipc) and TCP with CURVE."""
    return request.getfixturevalue(f"{request.param}_daemon")


def tcp_port(daemon) -> int:
    return int(daemon.info.endpoint.rsplit(":", 1)[1])


# -- 1. routing-id squatting ----------------------------------------------------------------------------
SQUATTER = r"""
import sys, zmq
endpoint, server_key = sys.argv[1], sys.argv[2]
context = zmq.Context()
sockets = []
for k in range(300):
    s = context.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTING_ID, b"\0" + (0x6b8b4567 + k).to_bytes(4, "big"))  # libzmq's next generated ids
    if server_key != "-" and k % 2:  # half of them try CURVE with a key of their own
        public, secret = zmq.curve_keypair()
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_key.encode(), public, secret
    s.connect(endpoint)
    try:
        s.send(b"x", zmq.NOBLOCK)
    except zmq.Again:
        pass
    sockets.append(s)
print("attached", flush=True)
sys.stdin.readline()
"""


def test_routing_id_squatting_from_another_user_leaves_the_daemon_serving(daemon):
    info = daemon.info
    server_key = info.curve.server_public if info.curve else "-"
    squatter = attacker(SQUATTER, info.endpoint, server_key)
    try:
        assert squatter.stdout.readline().strip() == "attached", squatter.stderr.read()
        time.sleep(1.0)  # let libzmq attach whatever it would attach
        for _ in range(5):  # each new client would take the next generated routing id
            with daemon.client() as client:
                assert client.status().pid == daemon.process.pid
        assert daemon.process.poll() is None, daemon.log()[-2000:]
    finally:
        release(squatter)


# -- 2. memory before authentication ------------------------------------------------------------------------
RAW_FLOOD = r"""
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])

def greeting(mechanism):
    return b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + mechanism.ljust(20, b"\0") + b"\0" + bytes(31)

ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
sent, held = 0, []
for i in range(5):
    s = socket.create_connection((host, port))
    s.settimeout(5)
    held.append(s)
    try:
        if i % 2 == 0:  # a NULL peer: READY, then a message frame declared as 1 GiB
            s.sendall(greeting(b"NULL") + bytes([0x04, len(ready)]) + ready + b"\x02" + struct.pack(">Q", 1 << 30))
        else:  # a CURVE peer: a handshake command declared as 1 GiB
            s.sendall(greeting(b"CURVE") + b"\x06" + struct.pack(">Q", 1 << 30))
        chunk = bytes(1 << 20)
        for _ in range(200):
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
print(sent, flush=True)
sys.stdin.readline()
"""


def test_declared_gigabyte_frames_from_unauthenticated_peers_do_not_grow_the_daemon(tcp_daemon):
    """Over TCP anyone may connect; over ipc another user cannot (test_another_user_cannot_open_the_socket)."""
    daemon = tcp_daemon
    before = rss_bytes(daemon.process.pid)
    flood = attacker(RAW_FLOOD, "127.0.0.1", str(tcp_port(daemon)))
    try:
        sent = int(flood.stdout.readline() or -1)
        assert sent >= 0, flood.stderr.read()
        time.sleep(1.0)
        grown = rss_bytes(daemon.process.pid) - before
        assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB after {sent / 2**20:.0f} MiB sent"
    finally:
        release(flood)
    with daemon.client() as client:
        client.ping()


CONNECT_IPC = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    print("connected")
except OSError as error:
    print(type(error).__name__)
"""


def test_another_user_cannot_open_the_socket(ipc_daemon):
    path = ipc_daemon.info.endpoint.removeprefix("ipc://")
    out, err = attacker(CONNECT_IPC, path).communicate(timeout=30)
    assert out.strip() == "PermissionError", out + err
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    assert mode & 0o077 == 0 and stat.S_IMODE(Path(path).parent.stat().st_mode) & 0o077 == 0


def test_an_authenticated_message_over_the_byte_cap_is_refused_unread(tmp_path, weights_file):
    # parts ≤ 64 KiB, messages ≤ 256 KiB
    small = start_daemon(tmp_path, weights_file, "--lazy", "--max-image-side", "64")
    try:
        raw = small.raw_socket()
        header = Codec().encode(MessageType.PING)[0]
        raw.send_multipart([header, *[bytes(64 * 1024)] * 5])
        assert raw.poll(5000), "the daemon did not answer"
        reply = Codec().decode(raw.recv_multipart())
        assert reply.type is MessageType.ERROR and "the daemon's limits" in reply.body["message"]
        raw.close(0)
        with small.client() as client:
            client.ping()
    finally:
        small.stop()


def test_without_a_zap_handler_no_curve_peer_gets_through():
    """Fail closed: libzmq's default with no ZAP handler is to admit any CURVE key."""
    context = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    try:
        server = KeyPair.generate()
        make_curve_server(router, server)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        public, secret = zmq.curve_keypair()
        dealer.curve_serverkey, dealer.curve_publickey, dealer.curve_secretkey = server.public.encode(), public, secret
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"hello", zmq.NOBLOCK)
        assert not router.poll(1500)
    finally:
        router.close(0)
        dealer.close(0)
        context.term()


# -- 3. stop and start never signal another process ---------------------------------------------------------
@pytest.fixture
def bystander():
    """An unrelated process whose pid a stale connection file names."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def stale_file(directory: Path, pid: int) -> Path:
    path = directory / "connection.json"
    write_connection_file(ConnectionInfo("tcp://127.0.0.1:9", pid=pid, curve=random_curve_keys()), path)
    return path


def test_stop_with_a_stale_file_signals_nothing_and_removes_it(tmp_path, bystander):
    path = stale_file(tmp_path, bystander.pid)
    stopped = daemon_cli("stop", connection_file=path)
    time.sleep(0.5)
    assert bystander.poll() is None, "daemon stop signalled an unrelated process"
    assert stopped.returncode == 0 and "No daemon is running" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not path.exists()
    assert daemon_cli("status", connection_file=path).returncode == 3


def test_start_replaces_a_stale_file_whose_pid_now_runs_another_process(tmp_path, weights_file, bystander):
    path = stale_file(tmp_path, bystander.pid)
    started = daemon_cli("start", "--weights", str(weights_file), "--device", "cpu", "--lazy", connection_file=path)
    try:
        assert started.returncode == 0, started.stderr
        assert read_connection_file(path).pid not in (bystander.pid, 0)
        assert bystander.poll() is None
    finally:
        daemon_cli("stop", connection_file=path)


def test_stop_signals_a_daemon_that_does_not_answer_once_its_identity_is_checked(tmp_path, weights_file):
    path = tmp_path / "connection.json"
    assert daemon_cli("start", "--weights", str(weights_file), "--device", "cpu", "--lazy",
                      connection_file=path).returncode == 0
    pid = read_connection_file(path).pid
    os.kill(pid, signal.SIGSTOP)  # hung: it cannot answer the shutdown request
    try:
        threading.Timer(4.0, os.kill, (pid, signal.SIGCONT)).start()  # then it can act on the SIGTERM it got
        stopped = daemon_cli("stop", connection_file=path, timeout=60)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not probe(path.with_suffix(".lock")).held
        wait_until(lambda: ProcessIdentity.of(pid) is None, 10, f"daemon {pid} exits")
    finally:
        if ProcessIdentity.of(pid) is not None:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def test_a_recorded_identity_with_another_start_time_is_never_signalled(bystander):
    real = ProcessIdentity.of(bystander.pid)
    assert real is not None and real.is_running()
    assert not terminate(ProcessIdentity(bystander.pid, real.started + "0"))
    time.sleep(0.2)
    assert bystander.poll() is None
    assert terminate(real)
    assert bystander.wait(10) == -signal.SIGTERM


def test_the_lock_is_exclusive_and_records_its_holder(tmp_path):
    path = tmp_path / "connection.lock"
    assert not probe(path).held
    lock = DaemonLock.acquire(path)
    try:
        lock.record(ProcessIdentity.current())
        state = probe(path)
        assert state.held and state.owner == ProcessIdentity.current()
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
            DaemonLock.acquire(path, wait_s=0.2)
    finally:
        lock.release()
    assert not probe(path).held
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- 4. connection files another user could plant, read or replace ------------------------------------------
def make_unsafe(case: str, root: Path) -> Path:
    """A connection file (for a daemon that does not exist) made unsafe in the way ``case`` names."""
    directory = root / "dir"
    directory.mkdir(mode=0o700)
    path = directory / "connection.json"
    write_connection_file(ConnectionInfo("tcp://127.0.0.1:9", pid=1, curve=random_curve_keys()), path)
    if case == "symlink":
        target = directory / "real.json"
        path.rename(target)
        path.symlink_to(target)
    elif case == "foreign owner":
        os.chown(path, NOBODY, NOBODY)
    elif case == "readable by others":
        path.chmod(0o644)
    elif case == "group-writable":
        path.chmod(0o620)
    elif case == "world-writable directory":
        directory.chmod(0o777)
    elif case == "sticky world-writable directory":
        directory.chmod(0o1777)
    elif case == "world-writable directory above":
        root.chmod(0o777)
    elif case == "directory of another user":
        os.chown(directory, NOBODY, NOBODY)
    return path


UNSAFE = ["symlink", "foreign owner", "readable by others", "group-writable", "world-writable directory",
          "sticky world-writable directory", "world-writable directory above", "directory of another user"]


@pytest.mark.parametrize("case", UNSAFE)
def test_an_unsafe_connection_file_is_refused_naming_the_file_and_the_fix(tmp_path, case):
    path = make_unsafe(case, tmp_path)
    with pytest.raises(DaemonError) as raised:
        connect(path, start_command=["false"])  # refused before anything is started or sent
    message = str(raised.value)
    assert (str(path.parent) in message
            and any(fix in message for fix in ("chmod", "remove", "use a directory"))), message
    status = daemon_cli("status", connection_file=path)
    assert (status.returncode == 1 and status.stderr.startswith("error: ")
            and status.stderr.count("\n") == 1), status.stderr
    assert "Traceback" not in status.stderr


PLANTED_LISTENER = r"""
import json, os, sys, time, zmq
shared = sys.argv[1]
context = zmq.Context()
router = context.socket(zmq.ROUTER)
port = router.bind_to_random_port("tcp://127.0.0.1")
public, secret = zmq.curve_keypair()
client_public, client_secret = zmq.curve_keypair()
router.curve_server, router.curve_secretkey = True, secret
path = os.path.join(shared, "connection.json")
with open(path, "w") as planted:
    json.dump({"endpoint": f"tcp://127.0.0.1:{port}", "protocol_version": 2, "pid": 1, "max_frame_bytes": 262144,
               "curve": {"server_public": public.decode(), "client_public": client_public.decode(),
                         "client_secret": client_secret.decode()}}, planted)
os.chmod(path, 0o600)
print("planted", flush=True)
received = 0
deadline = time.monotonic() + 6
while time.monotonic() < deadline:
    if router.poll(100):
        router.recv_multipart()
        received += 1
print(received, flush=True)
"""


@pytest.fixture
def shared_dir():
    """A directory anyone may create files in, like /tmp, where another user can reach it."""
    directory = Path(tempfile.mkdtemp(prefix="nst-shared-"))
    directory.chmod(0o1777)
    yield directory
    shutil.rmtree(directory)


def test_a_file_planted_by_another_user_in_a_shared_directory_gets_nothing(shared_dir):
    shared = shared_dir
    planter = attacker(PLANTED_LISTENER, str(shared))
    assert planter.stdout.readline().strip() == "planted", planter.stderr.read()
    with pytest.raises(DaemonError, match="another user|other users"):
        connect(shared / "connection.json")
    assert int(planter.stdout.readline()) == 0, "the client sent something to another user's listener"
    planter.wait(10)


def test_the_daemon_refuses_to_write_its_files_where_others_can_change_them(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    served = daemon_cli("serve", "--lazy", "--device", "cpu", connection_file=shared / "connection.json", timeout=60)
    assert served.returncode == 1 and "can be changed by other users" in served.stderr, served.stderr
    assert "Traceback" not in served.stderr and list(shared.iterdir()) == []


# -- 5. one daemon per connection file ---------------------------------------------------------------------
def test_two_concurrent_serves_give_exactly_one_daemon(tmp_path, weights_file):
    """The old code's check-then-write let both run when they checked at the same moment (intermittent)."""
    path = tmp_path / "connection.json"
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(path))
    command = [sys.executable, "-m", "daemon", "serve", "--lazy", "--device", "cpu", "--weights", str(weights_file)]
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    try:
        wait_until(lambda: path.exists() and read_connection_file(path).pid in [p.pid for p in processes], 60,
                   "a daemon writes its connection file")
        wait_until(lambda: sum(p.poll() is not None for p in processes) == 1, 30, "the other daemon gives up")
        (winner,) = [p for p in processes if p.poll() is None]
        for loser in processes:
            if loser is not winner:
                assert loser.returncode == 4 and "already running" in loser.stderr.read()
        assert read_connection_file(path).pid == winner.pid
        with DaemonClient(read_connection_file(path)) as client:
            assert client.status().pid == winner.pid
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)


def test_two_concurrent_starts_give_exactly_one_daemon(tmp_path, weights_file):
    path = tmp_path / "connection.json"
    args = ("start", "--weights", str(weights_file), "--device", "cpu", "--lazy")
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda: results.append(daemon_cli(*args, connection_file=path)))
               for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        pid = read_connection_file(path).pid
        wait_until(lambda: serving_daemons(path) == [pid], 30, f"only daemon {pid} serves ({serving_daemons(path)})")
    finally:
        daemon_cli("stop", connection_file=path)


def test_a_removed_connection_file_does_not_lead_to_a_second_daemon(tmp_path, weights_file):
    path = tmp_path / "connection.json"
    args = ("start", "--weights", str(weights_file), "--device", "cpu", "--lazy")
    assert daemon_cli(*args, connection_file=path).returncode == 0
    first = read_connection_file(path).pid
    try:
        path.unlink()
        again = daemon_cli(*args, connection_file=path)
        assert again.returncode == 0 and f"already running (pid {first}" in again.stdout, again.stdout + again.stderr
        assert read_connection_file(path).pid == first  # the running daemon wrote it again
        wait_until(lambda: serving_daemons(path) == [first], 30,
                   f"only daemon {first} serves ({serving_daemons(path)})")
    finally:
        assert daemon_cli("stop", connection_file=path).returncode == 0
    # stop returns once the lock is released, which is a moment before the process ends
    wait_until(lambda: ProcessIdentity.of(first) is None, 10, f"daemon {first} exits")


# -- 6. output and previews within the pixel limit ----------------------------------------------------------
@pytest.mark.parametrize(("options", "match"), [
    ({"output_size": (16384, 16384)}, r"output has 268435456 pixels .*the limit is 67108864"),
    ({"output_size": (8193, 8192)}, r"output has 67117056 pixels"),
    ({"settings_size": 16384}, r"settings.size 16384 makes a 16384×16384 result"),  # previews and result, no output
])
def test_a_huge_output_for_a_tiny_job_is_refused(daemon, options, match):
    settings, options = dict(TINY_SETTINGS), dict(options)
    if "settings_size" in options:
        settings["size"] = options.pop("settings_size")
    with daemon.client() as client:
        job_id = None
        try:
            with pytest.raises(DaemonJobError, match=match) as raised:
                job_id = client.submit(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], settings, preview_every=1,
                                       **options)
            assert raised.value.code == "invalid_request"
        finally:
            if job_id is not None:
                client.cancel(job_id)


def test_the_largest_allowed_output_is_accepted(daemon):
    with daemon.client() as client:
        job_id = client.submit(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], LONG_SETTINGS, output_size=(8192, 8192))
        client.cancel(job_id)
        with pytest.raises(DaemonJobError, match="cancelled"):
            client.wait(job_id)


# -- 7. a flood of refusals, and the log file ---------------------------------------------------------------
def refusal_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Refused since the last such line" in line]


def refused_in_all(lines: list[str]) -> int:
    return sum(int(line.rsplit("; ", 1)[1].split(" in all")[0]) for line in lines)


def test_a_flood_of_refused_messages_logs_a_bounded_number_of_lines_beside_the_connection_file(tmp_path, weights_file):
    path = tmp_path / "private" / "connection.json"
    started = daemon_cli("start", "--weights", str(weights_file), "--device", "cpu", "--lazy", connection_file=path)
    assert started.returncode == 0, started.stderr
    log_file = path.with_name("connection.log")
    try:
        assert log_file.exists() and stat.S_IMODE(log_file.stat().st_mode) == 0o600
        raw = DaemonClient(read_connection_file(path))  # the socket of a client with the right credentials
        for _ in range(3000):
            raw.socket.send_multipart([b"\xc1 not msgpack"], copy=False)
        flood_ended = time.monotonic()
        wait_until(lambda: refused_in_all(refusal_lines(log_file.read_text())) == 3000, 25,
                   "a summary counts every refused message")
        lines = refusal_lines(log_file.read_text())
        assert len(lines) <= 2 + (time.monotonic() - flood_ended) / 10, lines
        assert "not valid msgpack" in lines[-1]
        raw.close()
    finally:
        daemon_cli("stop", connection_file=path)


HANDSHAKES = r"""
import sys, zmq
endpoint, server_key = sys.argv[1], sys.argv[2].encode()
context = zmq.Context()
for _ in range(100):
    s = context.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    public, secret = zmq.curve_keypair()
    s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_key, public, secret
    s.connect(endpoint)
    s.send(b"x")
    s.poll(50)
    s.close(0)
print("done", flush=True)
"""


def test_refused_handshakes_are_counted_in_a_bounded_number_of_lines(tcp_daemon):
    daemon = tcp_daemon
    before = len(refusal_lines(daemon.log()))
    flood = attacker(HANDSHAKES, daemon.info.endpoint, daemon.info.curve.server_public)
    out, err = flood.communicate(timeout=120)
    assert out.strip() == "done", err
    wait_until(lambda: "did not issue" in "\n".join(refusal_lines(daemon.log())[before:]), 25,
               "a summary of the refused keys")
    assert len(refusal_lines(daemon.log())) - before <= 3


# -- 8. jobs belong to their client --------------------------------------------------------------------------
def test_another_clients_job_cannot_be_warm_started_from_cancelled_or_seen(daemon):
    content, style = rgb_image(40, 48, 1), rgb_image(40, 40, 2)
    with daemon.client() as owner, daemon.client() as other:
        finished = owner.stylize(content, [style], TINY_SETTINGS)
        with pytest.raises(DaemonJobError, match="no kept result of yours") as raised:
            other.stylize(content, [style], TINY_SETTINGS, warm_start=finished.job_id)
        assert raised.value.code == "invalid_request"
        owner.stylize(content, [style], TINY_SETTINGS, warm_start=finished.job_id)  # its owner still can

        running = owner.submit(content, [style], LONG_SETTINGS)
        try:
            # the previous job may still show as running for a moment after its result was sent
            wait_until(lambda: next(iter(owner.status().running()), {}).get("job_id") == running, 30, "the job runs")
            seen = other.status()
            assert seen.running() == [{"job_id": None, "progress": None}]
            assert running not in json.dumps(seen.to_wire())
            assert owner.status().running()[0]["job_id"] == running
            other._send(MessageType.CANCEL, {"job_id": running})
            reply = other._receive(5)
            assert reply is not None and reply.type is MessageType.ERROR and "of yours" in reply.body["message"]
            assert owner.status().running()[0]["job_id"] == running
        finally:
            owner.cancel(running)
            with pytest.raises(DaemonJobError, match="cancelled"):
                owner.wait(running)


# -- 9. replay ------------------------------------------------------------------------------------------------
class Recorder:
    """A TCP relay in front of the daemon that keeps what the client sent, as an eavesdropper would."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port = port
        self.sent = bytearray()
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def pump(source: socket.socket, sink: socket.socket, keep: bool) -> None:
            try:
                while data := source.recv(65536):
                    if keep:
                        self.sent.extend(data)
                    sink.sendall(data)
            except OSError:
                pass
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)


def test_a_recorded_tcp_session_replayed_does_nothing(tcp_daemon):
    """Over ipc nobody else can even connect; over TCP, CURVE's per-connection keys make a recording useless."""
    daemon = tcp_daemon
    recorder = Recorder(tcp_port(daemon))
    relayed = ConnectionInfo(f"tcp://127.0.0.1:{recorder.port}", pid=daemon.info.pid, curve=daemon.info.curve,
                             max_frame_bytes=daemon.info.max_frame_bytes)
    with DaemonClient(relayed) as client:
        client.stylize(rgb_image(40, 48, 1), [rgb_image(40, 40, 2)], TINY_SETTINGS)
    with daemon.client() as observer:
        # The worker counts a job once it has sent the result: wait until it is idle again.
        wait_until(lambda: not observer.status().running(), 10, "the recorded job is counted")
        done = observer.status().jobs_done
    assert len(recorder.sent) > 1000
    replay = socket.create_connection(("127.0.0.1", tcp_port(daemon)))
    try:
        replay.settimeout(3)
        replay.sendall(bytes(recorder.sent))
        time.sleep(2)
    except OSError:
        pass  # the daemon hung up on it
    finally:
        replay.close()
    with daemon.client() as observer:
        status = observer.status()
    assert status.jobs_done == done and status.queue == [] and not status.running()


# -- 10. hello with another protocol version -----------------------------------------------------------------
@pytest.mark.parametrize("version", [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, None, "2"])
def test_hello_with_another_protocol_version_gets_a_version_error(daemon, version):
    with daemon.client() as client:
        with pytest.raises(DaemonJobError, match="protocol version") as raised:
            client.request(MessageType.HELLO, {"protocol_version": version}, expect=MessageType.WELCOME)
        assert raised.value.code == ErrorCode.VERSION_MISMATCH.value
        assert client.hello().protocol_version == PROTOCOL_VERSION


# -- 11. the bridge's malformed input -------------------------------------------------------------------------
def bridge_message(fields: dict, frames: list[bytes] = (), declared: list[int] | None = None) -> bytes:
    header = json.dumps({**fields, "frames": declared if declared is not None else [len(f) for f in frames]}).encode()
    return struct.pack("<I", len(header)) + header + b"".join(frames)


SPEC = {"width": 2, "height": 2, "channels": 4, "dtype": "f32"}
CONTENT, STYLE = {"role": "content", **SPEC}, {"role": "style", **SPEC}


def bridge_submit(images: list, frames: list[bytes] = (), declared: list[int] | None = None, **body) -> bytes:
    return bridge_message({"op": "submit", "submit": {"images": images, **body}}, frames, declared)


BRIDGE_INPUTS = {
    "garbage": bytes(range(7, 250, 3)) * 3,
    "4 GB length prefix": b"\xff\xff\xff\xff" + b"{}" * 10,
    "bad JSON": struct.pack("<I", 9) + b"{not json",
    "not UTF-8": struct.pack("<I", 4) + b"\xff\xfe\xfd\xfc",
    "truncated frame": bridge_submit([CONTENT, STYLE], declared=[64, 64]) + bytes(70),
    "wrong image count": bridge_submit([CONTENT, STYLE, STYLE], [bytes(64)] * 2),
    "images not a list": bridge_submit(3, [bytes(64)] * 2),
    "submit not a map": bridge_message({"op": "submit", "submit": [CONTENT, STYLE]}, [bytes(64)] * 2),
    "spec without a size": bridge_submit([{"role": "content", "dtype": "f32"}, STYLE], [bytes(64)] * 2),
    "frame of the wrong size": bridge_submit([CONTENT, STYLE], [bytes(63), bytes(64)]),
    "1 TiB declared frame": bridge_submit([CONTENT, STYLE], declared=[2**40, 64]),
    "a frame list that is not one": struct.pack("<I", 17) + b'{"frames": "all"}',
    "unknown field": bridge_submit([CONTENT, STYLE], [bytes(64)] * 2, evil=1),
    "unknown op": bridge_message({"op": "stylize", "content": SPEC, "styles": [SPEC]}, [bytes(64)] * 2),
}


@pytest.mark.parametrize("data", BRIDGE_INPUTS.values(), ids=BRIDGE_INPUTS.keys())
def test_the_bridge_answers_malformed_input_with_one_error_event(tmp_path, data):
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(tmp_path / "none.json"))
    completed = subprocess.run([sys.executable, "-m", "daemon.client.bridge"], input=data, capture_output=True,
                               cwd=REPO_ROOT, env=env, timeout=60)
    assert completed.returncode == 2, completed.stderr.decode(errors="replace")
    assert b"Traceback" not in completed.stderr and b"MemoryError" not in completed.stderr
    events = io.BytesIO(completed.stdout)
    fields, frames = read_message(events)
    assert fields["event"] == "error" and "malformed request" in fields["message"] and frames == []
    assert read_message(events) is None  # exactly one event
