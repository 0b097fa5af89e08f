"""Issue #27, findings 7 (the daemon's part), 11 and 12: what the daemon's life cycle tells the user, with real
daemon processes, real signals and, for a full or read-only disk, a real tmpfs mounted in a mount namespace of
its own (root only; the rest of the system never sees it)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from daemon.client.contract import DaemonJobError
from daemon.server.lifecycle import ProcessIdentity
from nst_engine.cli.image_files import write_image

from .daemon_harness import LONG_SETTINGS, REPO_ROOT, TINY_SETTINGS, rgb_image, start_daemon, wait_until
from .stand_ins import smooth_image

MiB = 1 << 20


def daemon_cli(*args: str, connection_file: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)



def daemon_in(folder: Path, weights_file: Path, *extra: str):
    folder.mkdir(exist_ok=True)
    return start_daemon(folder, weights_file, *extra)


def one_line(text: str) -> str:
    assert text.strip().count("\n") == 0 and "Traceback" not in text, text
    return text.strip()


@pytest.fixture
def images(tmp_path: Path) -> tuple[str, str]:
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    write_image(content, smooth_image(40, 48, 1))
    write_image(style, smooth_image(40, 40, 2))
    return str(content), str(style)


def running_job(daemon) -> bool:
    with daemon.client() as client:
        return any(device["running"] is not None for device in client.status().devices)


# -- 11a. stop during a job ----------------------------------------------------------------------------------
def test_stop_during_a_job_tells_its_client_that_the_daemon_was_stopped(tmp_path, weights_file, images):
    daemon = daemon_in(tmp_path / "d", weights_file)
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(daemon.connection_file))
    run = subprocess.Popen([sys.executable, "-m", "daemon", "run", *images, "-o", str(tmp_path / "out.png"), "--size",
                            "48", "--iterations", "100000", "--scales", "1", "--optimizer", "adam", "-q"],
                           cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: running_job(daemon), 120, "run's job is running")
        path = daemon.connection_file
        stops: list[subprocess.CompletedProcess[str]] = []
        stopper = threading.Thread(target=lambda: stops.append(daemon_cli("stop", connection_file=path)))
        with daemon.client() as queued:  # a second job, waiting behind the first (wait heartbeats meanwhile)
            job_id = queued.submit(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], TINY_SETTINGS)
            stopper.start()
            with pytest.raises(DaemonJobError, match="^The daemon was stopped during the job.$") as raised:
                queued.wait(job_id)
            assert raised.value.code == "cancelled"
        stopper.join(120)
        assert stops[0].returncode == 0 and "Daemon stopped." in stops[0].stdout, stops[0].stdout + stops[0].stderr
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
        daemon.stop()
    assert run.returncode == 1
    assert one_line(err) == "error: The daemon was stopped during the job."


# -- 11b. a stopped (SIGSTOP) daemon ---------------------------------------------------------------------------
def test_a_stopped_daemon_is_reported_as_not_answering_by_status_run_and_stop(tmp_path, weights_file, images):
    """status and run say so at once (run used to wait 198 s to say "did not start", status said "No daemon is
    running"); stop still sends SIGTERM to the verified process, and says that it is not answering."""
    daemon = daemon_in(tmp_path / "d", weights_file, "--lazy")
    pid = daemon.process.pid
    path = daemon.connection_file
    not_answering = f"The daemon (pid {pid}) is not answering"
    os.kill(pid, signal.SIGSTOP)
    try:
        status = daemon_cli("status", connection_file=path, timeout=60)
        assert status.returncode == 1 and not_answering in one_line(status.stderr), status.stdout + status.stderr
        run = daemon_cli("run", *images, "-o", str(tmp_path / "out.png"), "--size", "32", "--iterations", "2",
                         "--scales", "1", "-q", connection_file=path, timeout=90)
        assert run.returncode == 1 and not_answering in one_line(run.stderr), run.stderr
        assert not (tmp_path / "out.png").exists()
        assert daemon.process.poll() is None and ProcessIdentity.of(pid) is not None  # run started no other daemon

        stop = daemon_cli("stop", connection_file=path, timeout=90)
        assert stop.returncode == 1 and f"{not_answering}; sent it SIGTERM." in stop.stdout, stop.stdout + stop.stderr
        assert f"kill -CONT {pid}" in one_line(stop.stderr)
        os.kill(pid, signal.SIGCONT)  # now it acts on the SIGTERM that stop sent
        assert daemon.process.wait(30) == 0
    finally:
        if daemon.process.poll() is None:
            os.kill(pid, signal.SIGCONT)
        daemon.stop()


# -- 11c and 11e. a full or read-only disk -------------------------------------------------------------------
def in_own_tmpfs(mount_point: Path, options: str, script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``script`` (sh) run in a mount namespace of its own where a fresh tmpfs (``options``) is mounted on
    ``mount_point``; whatever runs there (a daemon included) sees it, nothing else does."""
    mount_point.mkdir(exist_ok=True)
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 2; ' + script, "sh", options, str(mount_point)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, **env), capture_output=True, text=True,
                               timeout=180)
    if completed.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {completed.stderr.strip()}")
    return completed


START = '"$PYTHON" -m daemon start --weights "$WEIGHTS" --device cpu --lazy'
FILL = 'dd if=/dev/zero of="$DISK/fill" bs=4096 2>/dev/null; '  # until the disk is full


def disk_env(disk: Path, weights_file: Path, connection: Path | None = None) -> dict[str, str]:
    return {"PYTHON": sys.executable, "WEIGHTS": str(weights_file), "DISK": str(disk),
            "NEURAL_STYLE_CONNECTION": str(connection or disk / "connection.json")}


def test_a_full_disk_is_named_in_starts_one_line_error(tmp_path, weights_file):
    disk = tmp_path / "disk"
    full = in_own_tmpfs(disk, "size=64k,mode=0700", FILL + START, disk_env(disk, weights_file))
    assert full.returncode == 1, full.stdout + full.stderr
    assert one_line(full.stderr) == (f"error: the daemon could not start: cannot write the log {disk}/connection.log "
                                     "(No space left on device)")


def test_a_connection_file_that_a_full_disk_refuses_is_named_in_start_and_in_the_log(tmp_path, weights_file):
    """The log and the lock have room (in the pages they already hold), the connection file has none: start says
    which file could not be written, and so does the log."""
    disk, kept_log = tmp_path / "disk", tmp_path / "kept.log"
    room = ('umask 077; echo "an earlier line" > "$DISK/connection.log"; head -c 4096 /dev/zero > '
            '"$DISK/connection.lock"; ')
    after = f'; status=$?; cp "$DISK/connection.log" "{kept_log}"; exit $status'
    full = in_own_tmpfs(disk, "size=64k,mode=0700", room + FILL + START + after, disk_env(disk, weights_file))
    assert full.returncode == 1, full.stdout + full.stderr
    expected = f"Cannot write the connection file {disk}/connection.json: No space left on device"
    assert one_line(full.stderr) == f"error: the daemon could not start: {expected}"
    log = kept_log.read_text()
    assert log.startswith("an earlier line\n") and f"ERROR daemon: {expected}" in log, log


@pytest.mark.parametrize("where", ["folder", "subfolder"])
def test_a_read_only_connection_folder_gives_one_line_from_start(tmp_path, weights_file, where):
    disk = tmp_path / "disk"
    connection = disk / "connection.json" if where == "folder" else disk / "sub" / "connection.json"
    started = in_own_tmpfs(disk, "ro,size=64k,mode=0700", START, disk_env(disk, weights_file, connection))
    assert started.returncode == 1, started.stdout + started.stderr
    assert "Read-only file system" in one_line(started.stderr)
    assert str(connection.parent) in started.stderr


# -- 11d. a removed connection file that cannot be written again ------------------------------------------------
@pytest.mark.parametrize("how", ["world-writable", "immutable"])
def test_a_connection_file_that_cannot_be_written_again_leaves_the_jobs_running(tmp_path, weights_file, how):
    """Its folder made unsafe (group and others may write: refused) or immutable (chattr +i: EPERM, even for
    root) once the file is removed: the daemon logs it once, keeps its jobs and writes the file again once it can."""
    folder = tmp_path / "d"
    daemon = daemon_in(folder, weights_file)
    path = daemon.connection_file
    spoil, mend = (["chmod", "0777"], ["chmod", "0755"]) if how == "world-writable" else (["chattr", "+i"],
                                                                                            ["chattr", "-i"])
    failure = "was removed and cannot be written again"
    try:
        with daemon.client() as client:
            running = client.submit(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], LONG_SETTINGS)
            queued = client.submit(rgb_image(32, 32, 3), [rgb_image(32, 32, 4)], TINY_SETTINGS)
            path.unlink()
            spoilt = subprocess.run([*spoil, str(folder)], capture_output=True, text=True)
            if spoilt.returncode != 0:
                pytest.skip(f"{' '.join(spoil)} is not supported here: {spoilt.stderr.strip()}")
            seen_after_failure, deadline = [], time.monotonic() + 60
            stop_running = threading.Event()

            def on_progress(progress) -> None:  # cancel the long job once it has gone on past the failure
                if failure in daemon.log():
                    seen_after_failure.append(progress.iteration)
                if len(seen_after_failure) >= 3 or time.monotonic() > deadline:
                    stop_running.set()

            with pytest.raises(DaemonJobError, match="^Job cancelled.$"):
                client.wait(running, on_progress=on_progress, cancel=stop_running)
            assert len(seen_after_failure) >= 3, daemon.log()[-3000:]
            result = client.wait(queued)  # waiting through the failure, it runs and completes
            assert (result.image.spec.width, result.image.spec.height) == (32, 32)
            assert daemon.log().count(failure) == 1  # once, not once per retry
            subprocess.run([*mend, str(folder)], check=True)
            wait_until(path.exists, 20, "the daemon writes its connection file again")
            # It logs so just after writing: under load the line may come a moment after the file.
            wait_until(lambda: "wrote it again" in daemon.log(), 20, "the daemon logs that it wrote the file again")
            assert daemon.process.poll() is None
    finally:
        subprocess.run([*mend, str(folder)], capture_output=True)
        daemon.stop()


# -- 12a. the log is rotated --------------------------------------------------------------------------------
def test_the_log_that_start_gives_the_daemon_is_rotated_and_bounded(tmp_path, weights_file):
    """Three full old logs and a nearly full current one, then a daemon started and used: the oldest is dropped
    and each of the four files stays within 1 MiB, all of them private."""
    path = tmp_path / "private" / "connection.json"
    path.parent.mkdir(mode=0o700)
    current = path.with_name("connection.log")
    for name, size in (("connection.log.3", MiB), ("connection.log.2", MiB), ("connection.log.1", MiB),
                       ("connection.log", MiB - 100)):
        line = f"{name} " + "x" * 99
        path.with_name(name).write_text((line[:99] + "\n") * (size // 100))
        path.with_name(name).chmod(0o600)
    started = daemon_cli("start", "--weights", str(weights_file), "--device", "cpu", "--lazy", connection_file=path)
    assert started.returncode == 0, started.stderr
    try:
        for _ in range(5):  # submit and disconnect: each logs a line
            with start_client(path) as client:
                client.submit(rgb_image(32, 32, 1), [rgb_image(32, 32, 2)], LONG_SETTINGS)
        wait_until(lambda: current.read_text().count(": cancelling job") == 5, 30, "five lines logged")
    finally:
        assert daemon_cli("stop", connection_file=path).returncode == 0
    logs = sorted(path.parent.glob("connection.log*"))
    assert [log.name for log in logs] == ["connection.log", "connection.log.1", "connection.log.2", "connection.log.3"]
    assert all(log.stat().st_size <= MiB and stat.S_IMODE(log.stat().st_mode) == 0o600 for log in logs)
    assert path.with_name("connection.log.1").read_text().startswith("connection.log ")  # the one that was current
    assert path.with_name("connection.log.3").read_text().startswith("connection.log.2 ")  # the oldest is gone
    assert "Listening on" in current.read_text()


def start_client(path: Path):
    from daemon.client.zeromq import handshake

    return handshake(path, timeout_s=10, retries=2)


def test_many_lines_keep_the_daemons_log_within_four_mebibytes(tmp_path):
    import logging

    from daemon.__main__ import _PrivateLog

    handler = _PrivateLog(tmp_path / "daemon.log")
    writer = logging.getLogger("test-rotation")
    writer.propagate = False
    writer.addHandler(handler)
    try:
        for number in range(60_000):  # 6 MB of lines
            writer.warning("line %06d %s", number, "y" * 88)
    finally:
        writer.removeHandler(handler)
        handler.close()
    logs = sorted(tmp_path.glob("daemon.log*"))
    assert len(logs) == 4 and sum(log.stat().st_size for log in logs) <= 4 * MiB
    assert "line 059999" in (tmp_path / "daemon.log").read_text()


# -- 12c. one socket folder per connection file ------------------------------------------------------------------
def test_daemons_killed_with_a_long_connection_path_leave_one_socket_folder(tmp_path, weights_file, monkeypatch):
    temporary = Path(tempfile.mkdtemp(prefix="nst-", dir="/tmp"))  # short: the socket's path must fit there
    monkeypatch.setenv("TMPDIR", str(temporary))
    folder = tmp_path / ("long-" * 20)  # too long a path for a socket beside the connection file
    try:
        for _ in range(3):
            daemon = daemon_in(folder, weights_file, "--lazy")
            socket = Path(daemon.info.endpoint.removeprefix("ipc://"))
            daemon.process.kill()
            daemon.process.wait(30)
        made = list(temporary.glob("neural-style-*"))
        assert made == [socket.parent], made
        assert made[0].name.startswith(f"neural-style-{os.geteuid()}-")
        assert stat.S_IMODE(made[0].stat().st_mode) == 0o700

        os.chown(made[0], 65534, 65534)  # someone else's now (as if planted): never used
        daemon = daemon_in(folder, weights_file, "--lazy")
        try:
            assert not daemon.info.endpoint.startswith(f"ipc://{made[0]}/")
            with daemon.client() as client:
                client.ping()
        finally:
            daemon.stop()
        assert list(temporary.glob("neural-style-*")) == made  # the one it made instead is gone with it
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# -- 7. run checks its output before the job ---------------------------------------------------------------
def test_run_refuses_an_output_it_cannot_write_before_submitting_the_job(tmp_path, weights_file, images):
    daemon = daemon_in(tmp_path / "d", weights_file, "--lazy")
    try:
        run = daemon_cli("run", *images, "-o", "/no/such/dir/out.png", "--size", "32", "--iterations", "2",
                         "--scales", "1", "-q", connection_file=daemon.connection_file)
        assert run.returncode == 1
        assert one_line(run.stderr) == "error: /no/such/dir/out.png: the folder /no/such/dir does not exist"
        with daemon.client() as client:
            assert client.status().jobs_done == 0
        assert "from submission to the engine" not in daemon.log()
    finally:
        daemon.stop()
