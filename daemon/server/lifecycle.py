"""Which daemon runs, and how to stop it without ever signalling another process.  Standard library only.
The running daemon holds an exclusive lock on its lock file for as long as it lives and records its pid and
process start time in it; a pid is signalled only while the lock is held and the pid still has that start
time (docs/security.md, "One daemon per connection file").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..wire.private_files import UnsafeFileError, open_own, open_private, read_own_file

_RECORD_BYTES = 4096
_WINDOWS_LOCK_OFFSET = 1 << 20  # msvcrt locks are mandatory: lock a byte past the record so it stays readable


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as the system knows it now: pid plus start time (a pid alone is reused)."""

    pid: int
    started: str

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls.of(os.getpid()) or cls(os.getpid(), "")

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The process with ``pid`` now, or None if there is none."""
        started = _start_time(pid) if pid > 0 else None
        return None if started is None else cls(pid, started)

    def is_running(self) -> bool:
        """True only if this very process still runs (same pid, same start time)."""
        return bool(self.started) and ProcessIdentity.of(self.pid) == self


class LockHeldError(Exception):
    """Another daemon holds the lock; the message names it as it recorded itself."""


class DaemonLock:
    """The running daemon's exclusive lock; released by :meth:`release` or when the process ends."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, path: Path, *, wait_s: float = 1.0) -> DaemonLock:
        """Take the lock, retrying for ``wait_s`` (a ``stop`` or ``status`` may be probing it for an instant);
        LockHeldError if a daemon holds it, UnsafeFileError if the file is not private or not a lock file."""
        check_lock_file(path)
        descriptor = open_private(path, os.O_RDWR)
        if not _lock_within(descriptor, wait_s):
            owner = _read_record(descriptor)
            os.close(descriptor)
            who = f"pid {owner.pid}" if owner is not None else "a process"
            raise LockHeldError(f"A daemon ({who}) is already running for this connection file "
                                f"(its lock file is {path}).")
        return cls(descriptor)

    def record(self, identity: ProcessIdentity) -> None:
        assert self._descriptor is not None
        data = json.dumps(asdict(identity)).encode().ljust(_RECORD_BYTES, b" ")
        os.lseek(self._descriptor, 0, os.SEEK_SET)
        os.write(self._descriptor, data)

    def release(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)  # closing the descriptor drops the lock on every platform


@dataclass(frozen=True)
class LockState:
    held: bool
    owner: ProcessIdentity | None = None  # what the holder recorded, when held


def probe(path: Path) -> LockState:
    """Whether a daemon holds the lock at ``path`` now, without disturbing it or changing the file."""
    try:
        descriptor = open_own(path, os.O_RDWR)
    except FileNotFoundError:
        return LockState(held=False)
    try:
        if _try_lock(descriptor, exclusive=False):
            _unlock(descriptor)
            return LockState(held=False)
        return LockState(held=True, owner=_read_record(descriptor))
    finally:
        os.close(descriptor)


def check_lock_file(path: Path) -> None:
    """UnsafeFileError unless ``path`` is missing, blank or holds a daemon's record: the daemon writes into its
    lock file, so it must not take a file of the user's that has the lock's name."""
    try:
        data = read_own_file(path, limit=_RECORD_BYTES)
    except FileNotFoundError:
        return
    if data.strip(b"\0 \t\r\n") and _record(data) is None:  # NULs: a crash can leave them in a new file
        raise UnsafeFileError(f"{path} is not a daemon's lock file, and the daemon would write into it: move it "
                              "away, or set NEURAL_STYLE_CONNECTION to another path.")


@contextmanager
def exclusively(path: Path, *, wait_s: float = 10.0) -> Iterator[None]:
    """Hold an exclusive lock on the private file ``path`` (made if missing) for the block: one process at a time,
    e.g. for reading, changing and replacing the key file.  TimeoutError after ``wait_s``."""
    descriptor = open_private(path, os.O_RDWR)
    try:
        if not _lock_within(descriptor, wait_s):
            raise TimeoutError(f"{path} stayed locked by another process for {wait_s:g} s; try again.")
        yield
    finally:
        os.close(descriptor)  # and the lock with it


def terminate(identity: ProcessIdentity) -> bool:
    """Send SIGTERM to ``identity`` if that very process still runs; False if it does not."""
    if sys.platform.startswith("linux") and hasattr(os, "pidfd_open"):
        try:
            handle = os.pidfd_open(identity.pid)
        except ProcessLookupError:
            return False
        try:
            # The pidfd pins the process: checked after opening it, the identity cannot change before the signal.
            if not identity.is_running():
                return False
            signal.pidfd_send_signal(handle, signal.SIGTERM)
            return True
        finally:
            os.close(handle)
    if not identity.is_running():
        return False
    os.kill(identity.pid, signal.SIGTERM)  # elsewhere a tiny window remains between check and signal
    return True


def _read_record(descriptor: int) -> ProcessIdentity | None:
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        return _record(os.read(descriptor, _RECORD_BYTES))
    except OSError:
        return None


def _record(data: bytes) -> ProcessIdentity | None:
    try:
        fields = json.loads(data.decode("utf-8").strip() or "null")
        return ProcessIdentity(int(fields["pid"]), str(fields["started"]))
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


def _lock_within(descriptor: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while not _try_lock(descriptor, exclusive=True):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# -- platform parts -----------------------------------------------------------------------------------
if sys.platform == "win32":  # pragma: no cover - coded for Windows, tested on Linux only
    import msvcrt

    def _try_lock(descriptor: int, *, exclusive: bool) -> bool:
        os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(descriptor: int) -> None:
        os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(descriptor: int, *, exclusive: bool) -> bool:
        # A probe takes a shared lock: it conflicts with the daemon's exclusive one and with nothing else.
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)


def _start_time(pid: int) -> str | None:
    """A token for when ``pid`` started, None if no such process runs."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        if fields[0] == "Z":  # a zombie has ended; only its exit status remains
            return None
        return f"linux:{fields[19]}"  # field 22 of stat(5): start time in clock ticks after boot
    if sys.platform == "win32":
        return _windows_start_time(pid)
    try:
        result = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10,
                                check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    started = result.stdout.strip()
    return f"ps:{started}" if result.returncode == 0 and started else None


def _windows_start_time(pid: int) -> str | None:  # pragma: no cover - Windows only
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    process_query_limited_information, still_active = 0x1000, 259
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return None
    try:
        exit_code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(exit_code)) or exit_code.value != still_active:
            return None
        creation, exited, kernel, user = (wintypes.FILETIME() for _ in range(4))
        if not kernel32.GetProcessTimes(handle, ctypes.byref(creation), ctypes.byref(exited), ctypes.byref(kernel),
                                        ctypes.byref(user)):
            return None
        return f"windows:{(creation.dwHighDateTime << 32) | creation.dwLowDateTime}"
    finally:
        kernel32.CloseHandle(handle)

