"""Issue #27, findings 4, 5, 10, 12 (umask, orphan keys): the daemon's own files against concurrent commands, files of
the user's that happen to have their names, links planted by another user, a umask of 000, and a place an invitation
cannot be written to.  Real ``python -m daemon`` processes throughout; the attacker is uid 65534 (through setpriv)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from daemon.server.invitations import InvitationStore, keys_path
from daemon.wire.private_files import UnsafeFileError, private_directory

from .daemon_harness import REPO_ROOT

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
ENDPOINT = "tcp://127.0.0.1:5557"  # where invitations point: nothing needs to listen there

if os.geteuid() != 0:
    pytest.skip("these tests chown files to uid 65534 and run it, which needs root (CI runs as root)",
                allow_module_level=True)


def daemon_cli(*args: str, connection_file: Path, timeout: float = 120,
               prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    return subprocess.run([*prefix, sys.executable, "-m", "daemon", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(completed: subprocess.CompletedProcess[str], naming: Path) -> None:
    """Refused the way users are told things: non-zero, one error line on stderr that names the file, no traceback
    (``serve`` in the foreground logs to stderr too: its log lines may come first)."""
    assert completed.returncode != 0, completed.stdout + completed.stderr
    errors = [line for line in completed.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), completed.stderr
    assert str(naming) in completed.stderr and "Traceback" not in completed.stderr, completed.stderr


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every entry below ``directory``: its type and permission bits, and its bytes (a link: its target)."""
    found = {}
    for root, directories, files in os.walk(directory):
        for name in directories + files:
            path = Path(root, name)
            info = os.lstat(path)
            content = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else b""
            found[str(path.relative_to(directory))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), content)
    return found


def serve_or_start(command: str, connection_file: Path, watched: Path) -> subprocess.CompletedProcess[str]:
    """``serve`` or ``start`` expected to refuse.  A daemon that does not refuse is ended as soon as it has
    changed ``watched`` (or after three minutes), so that the test fails instead of hanging."""
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    arguments = [sys.executable, "-m", "daemon", command, "--lazy", "--device", "cpu"]
    before = snapshot(watched)
    process = subprocess.Popen(arguments, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 180  # a refusal takes seconds; a loaded machine may need many
    while process.poll() is None and time.monotonic() < deadline and snapshot(watched) == before:
        time.sleep(0.1)
    try:
        out, err = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    for pid in serving(connection_file):  # a daemon that did not refuse, started by serve or by start
        os.kill(pid, signal.SIGKILL)
    return subprocess.CompletedProcess(arguments, process.returncode, out, err)


def serving(connection_file: Path) -> list[int]:
    """Pids of the ``python -m daemon serve`` processes for ``connection_file`` (read from /proc, as root)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # not a process, or one that has ended
            continue
        if b"serve" in command and f"NEURAL_STYLE_CONNECTION={connection_file}".encode() in environment:
            found.append(int(entry.name))
    return found


# -- finding 4: a revocation undone by a concurrent invite ------------------------------------------------------
AT_ONCE = """
import sys
import daemon.server.endpoints, daemon.server.invitations
from daemon.__main__ import main
sys.stdin.readline()  # every process imported, so that they all go at once
sys.exit(main(sys.argv[1:]))
"""


def test_a_revocation_and_invitations_at_the_same_moment_undo_nothing(tmp_path):
    """``revoke`` and two ``invite`` at once, 15 times.  The old read-change-replace without a lock between
    processes admitted x again or lost an invited key whenever two of them overlapped."""
    connection_file = tmp_path / "connection.json"
    store = InvitationStore(keys_path(connection_file))
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    failures = []
    for round_ in range(15):
        revoked, invited = f"x{round_}", [f"y{round_}-{n}" for n in range(2)]
        store.invite(revoked)
        commands = [["revoke", revoked], *(["invite", "--name", name, "--endpoint", ENDPOINT,
                                        "-o", str(tmp_path / f"{name}.json")] for name in invited)]
        processes = [subprocess.Popen([sys.executable, "-c", AT_ONCE, *command], cwd=REPO_ROOT, env=env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for command in commands]
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.communicate(timeout=60) for process in processes]
        assert [p.returncode for p in processes] == [0] * len(processes), [err for _, err in results]
        names = {client.name for client in InvitationStore(store.path).clients()}
        if revoked in names or not set(invited) <= names:
            failures.append(f"round {round_}: {sorted(names)}")
    assert not failures, f"a revoked client admitted again or an invitation lost: {failures}"
    assert stat.S_IMODE(store.path.with_suffix(".lock").stat().st_mode) == 0o600


# -- finding 5: files that are not the daemon's ----------------------------------------------------------------
CASES = {  # the connection file's name, and a file of the user's in the daemon's way: its name, bytes and mode
    "a user's file as the connection file": ("notes.txt", "notes.txt", b"my notes\n", 0o600),
    "a regular file at the socket's path": ("connection.json", "connection.sock", b"not a socket\n", 0o644),
    "a user's file at the lock's path": ("connection.json", "connection.lock", b"my own lock notes\n", 0o644),
}


@pytest.mark.parametrize("command", ["serve", "start"])
@pytest.mark.parametrize("case", CASES)
def test_the_daemon_refuses_to_replace_a_file_that_is_not_its_own(tmp_path, case, command):
    connection_name, victim_name, content, mode = CASES[case]
    directory = tmp_path / "files"
    directory.mkdir(mode=0o700)
    victim = directory / victim_name
    victim.write_bytes(content)
    victim.chmod(mode)
    before = snapshot(directory)
    refused = serve_or_start(command, directory / connection_name, directory)
    one_error_line(refused, victim)
    assert snapshot(directory) == before
    stopped = daemon_cli("stop", connection_file=directory / connection_name, timeout=60)
    assert "Traceback" not in stopped.stderr and stopped.stderr.count("\n") <= 1, stopped.stderr
    assert snapshot(directory) == before, "stop changed or removed a file that is not the daemon's"


# -- finding 10: a link planted by another user ----------------------------------------------------------------
@pytest.fixture
def sticky_dir():
    """A directory like /tmp: anyone may create entries, only their owner may remove them."""
    directory = Path(tempfile.mkdtemp(prefix="nst-sticky-"))
    directory.chmod(0o1777)
    yield directory
    shutil.rmtree(directory)


def plant_link(link: Path, target: Path) -> None:
    """``link`` -> ``target``, made by uid 65534."""
    subprocess.run([*AS_NOBODY, sys.executable, "-c", "import os, sys; os.symlink(sys.argv[1], sys.argv[2])",
                    str(target), str(link)], check=True, cwd="/", env={"PATH": os.environ["PATH"]}, timeout=30)
    assert link.lstat().st_uid == NOBODY


@pytest.mark.parametrize("command", ["serve", "start"])
def test_a_link_planted_by_another_user_in_a_sticky_directory_is_not_followed(tmp_path, sticky_dir, command):
    """The old check looked at the directory the path resolved to (the victim's, private) and not at the link that
    led there, so the daemon wrote its files into a folder of the attacker's choosing."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (victim / "connection.lock").write_bytes(b"")  # its lock file: a daemon's, or the user's empty file
    (victim / "keep.txt").write_bytes(b"the victim's\n")
    link = sticky_dir / "neural-style"
    plant_link(link, victim)
    before = snapshot(victim)
    refused = serve_or_start(command, link / "connection.json", victim)
    one_error_line(refused, link)
    assert "symbolic link" in refused.stderr
    assert snapshot(victim) == before
    status = daemon_cli("status", connection_file=link / "connection.json", timeout=60)
    one_error_line(status, link)


def test_which_links_on_the_way_are_trusted(tmp_path, sticky_dir):
    """Each link on the way is checked, not only the first: ours or root's in a sticky directory, or anyone's in a
    directory that nobody else can write, is followed; another user's where others can write is not."""
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    (sticky_dir / "ours").symlink_to(target)
    assert private_directory(sticky_dir / "ours") == target.resolve()
    plant_link(sticky_dir / "theirs", target)
    (sticky_dir / "ours-to-theirs").symlink_to(sticky_dir / "theirs")  # ours, but it leads through theirs
    (sticky_dir / "relative").symlink_to("theirs")
    for path in (sticky_dir / "theirs", sticky_dir / "ours-to-theirs", sticky_dir / "ours-to-theirs" / "sub",
                 sticky_dir / "relative"):
        with pytest.raises(UnsafeFileError, match=f"{sticky_dir / 'theirs'} is a symbolic link"):
            private_directory(path, create=True)
    private_dir = tmp_path / "private"
    private_dir.mkdir(mode=0o700)
    (private_dir / "given").symlink_to(target)
    os.lchown(private_dir / "given", NOBODY, NOBODY)  # another user's link, where only we can write: it stays
    assert private_directory(private_dir / "given") == target.resolve()
    assert list(target.iterdir()) == []


# -- finding 12: missing folders under umask 000, and an invitation that could not be written ---------------------
def private_modes(root: Path) -> dict[str, int]:
    """The permission bits others have, of every entry below ``root`` that is not 0 (empty: all private)."""
    return {name: mode & 0o077 for name, (_, mode, _) in snapshot(root).items() if mode & 0o077}


def test_missing_folders_are_made_private_under_umask_000(tmp_path):
    umask_000 = ("sh", "-c", 'umask 000 && exec "$@"', "sh")
    made = tmp_path / "made"
    made.mkdir(mode=0o700)
    invitation = made / "out" / "nested" / "laptop.json"
    invited = daemon_cli("invite", "--name", "laptop", "--endpoint", ENDPOINT, "-o", str(invitation),
                         connection_file=made / "a" / "b" / "connection.json", prefix=umask_000)
    assert invited.returncode == 0, invited.stderr
    connection_file = made / "c" / "d" / "connection.json"
    started = daemon_cli("start", "--lazy", "--device", "cpu", connection_file=connection_file, prefix=umask_000)
    try:
        assert started.returncode == 0, started.stderr
        assert private_modes(made) == {}
        assert {"a", "a/b", "out", "out/nested", "c", "c/d", "c/d/connection.json"} <= set(snapshot(made))
    finally:
        daemon_cli("stop", connection_file=connection_file, timeout=60)


def world_writable_folder(place: Path) -> None:
    place.mkdir()
    place.chmod(0o777)


UNWRITABLE = {  # how a place is made one an invitation cannot be written to, and how the user then fixes it
    "a folder others can write to": (world_writable_folder, lambda place: place.chmod(0o700)),
    "a file where its folder should be": (lambda place: place.write_bytes(b"x"), lambda place: place.unlink()),
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_invitation_that_cannot_be_written_leaves_no_key_behind(tmp_path, case):
    spoil, fix = UNWRITABLE[case]
    connection_file = tmp_path / "server" / "connection.json"
    place = tmp_path / "place"
    spoil(place)
    invite = ("invite", "--name", "laptop", "--endpoint", ENDPOINT, "-o", str(place / "laptop.json"))
    failed = daemon_cli(*invite, connection_file=connection_file)
    one_error_line(failed, place)
    assert "laptop" not in daemon_cli("clients", connection_file=connection_file).stdout
    fix(place)
    again = daemon_cli(*invite, connection_file=connection_file)
    assert again.returncode == 0, again.stderr
    assert [client.name for client in InvitationStore(keys_path(connection_file)).clients()] == ["laptop"]
    assert (place / "laptop.json").exists()


def test_a_full_disk_leaves_the_key_file_whole(tmp_path):
    """With writes cut short (a file-size limit of one block, 512 bytes in sh, stands in for a full disk: the
    invitation file fits, the key file does not), the key file is the old one, whole, nothing is left beside it, the
    invitation written first is taken back, and the command says so in one line naming the file."""
    connection_file = tmp_path / "server" / "connection.json"
    store = InvitationStore(keys_path(connection_file))
    for n in range(8):
        store.invite(f"client-{n}")
    before = snapshot(connection_file.parent)
    assert len(store.path.read_bytes()) > 1024
    invitation = tmp_path / "laptop.json"
    limited = daemon_cli("invite", "--name", "laptop", "--endpoint", ENDPOINT, "-o", str(invitation),
                         connection_file=connection_file, prefix=("sh", "-c", 'ulimit -f 1 && exec "$@"', "sh"))
    one_error_line(limited, store.path)
    assert "File too large" in limited.stderr
    assert snapshot(connection_file.parent) == before
    assert not invitation.exists()
