"""Files only their owner may read or change: the connection file, the daemon's lock and log.  Standard
library only.  Another local user must not be able to plant a file we would trust, read one we wrote, or swap
one behind our back: the rules for directories and files are in docs/security.md ("Private files")."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

_POSIX = os.name == "posix"
_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
MAX_PRIVATE_FILE_BYTES = 1 << 20


class UnsafeFileError(Exception):
    """A file or directory that others could read, plant or replace; the message names it and the fix."""


def private_directory(directory: Path, *, create: bool = False) -> Path:
    """``directory`` resolved, after checking that no other user can change it or anything above it;
    with ``create``, a missing directory is made with mode 0700 first, else FileNotFoundError."""
    if create and not os.path.lexists(directory):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # its parents with the umask's mode
    resolved = Path(os.path.realpath(directory))
    info = os.stat(resolved)  # FileNotFoundError when missing: nothing there to trust or distrust
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFileError(f"{directory} is not a directory.")
    if not _POSIX:
        return resolved
    if not _owned_by_us_or_root(info) or _writable_by_others(info):
        raise UnsafeFileError(
            f"The directory {directory} can be changed by other users ({_describe(info)}), who could plant or "
            f"replace files in it: use a directory only you can write to (chmod go-w {resolved}, or choose another)."
        )
    for ancestor in resolved.parents:
        above = os.stat(ancestor)
        if not _owned_by_us_or_root(above) or (_writable_by_others(above) and not above.st_mode & stat.S_ISVTX):
            raise UnsafeFileError(
                f"The directory {ancestor}, above {directory}, can be changed by other users ({_describe(above)}), "
                f"who could replace {directory}: use a directory elsewhere."
            )
    return resolved


def read_private_file(path: Path, *, limit: int = MAX_PRIVATE_FILE_BYTES) -> bytes:
    """The bytes of a private file; UnsafeFileError if it or its directory is not private,
    FileNotFoundError if it does not exist."""
    with os.fdopen(open_private(path, os.O_RDONLY, create=False), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFileError(f"{path} is larger than {limit} bytes; it is not a file this program wrote.")
    return data


def write_private_file(path: Path, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``, mode 0600, in a private directory (made 0700 when
    missing).  Whatever was at the path, a symbolic link included, is replaced, never followed."""
    directory = private_directory(path.parent, create=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=directory)  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, directory / path.name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return directory / path.name


def open_private(path: Path, flags: int, *, create: bool = True) -> int:
    """A descriptor for a private file.  With ``create`` (a log or a lock file), one missing is made (mode 0600,
    its directory 0700), and one of ours that has become readable by others is tightened to 0600; without (a
    file to read), FileNotFoundError for one missing and UnsafeFileError for one readable by others."""
    directory = private_directory(path.parent, create=create)
    target = directory / path.name
    try:
        if not _POSIX and os.path.islink(target):  # no O_NOFOLLOW there
            raise OSError(f"{target} is a link")
        descriptor = os.open(target, flags | (os.O_CREAT if create else 0) | _OPEN_FLAGS, 0o600)
    except OSError:
        if os.path.islink(target):  # O_NOFOLLOW's refusal (ELOOP on Linux and macOS, EMLINK on FreeBSD)
            raise UnsafeFileError(f"{path} is a symbolic link; remove it (a private file is never a link).") from None
        raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is not a regular file; remove it.")
        if _POSIX and info.st_uid != os.geteuid():
            raise UnsafeFileError(
                f"{path} belongs to another user ({_owner_name(info.st_uid)}), who could have planted it: remove it "
                "(or point NEURAL_STYLE_CONNECTION elsewhere)."
            )
        if _POSIX and stat.S_IMODE(info.st_mode) & 0o077:
            if not create:
                raise UnsafeFileError(
                    f"{path} can be read or changed by other users (mode {stat.S_IMODE(info.st_mode):04o}): "
                    f"restrict it with chmod 600 {path}, or remove it and restart the daemon."
                )
            os.fchmod(descriptor, 0o600)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _owned_by_us_or_root(info: os.stat_result) -> bool:
    return info.st_uid in (0, os.geteuid())


def _writable_by_others(info: os.stat_result) -> bool:
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP) and not _is_our_private_group(info.st_gid)


def _is_our_private_group(gid: int) -> bool:
    """A user-private group: named after us, with nobody else in it (its members list is empty or just us)."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}


def _describe(info: os.stat_result) -> str:
    return f"owner {_owner_name(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):04o}"


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"

