"""Files only their owner may read or change: the connection file, the daemon's lock and log.  Standard
library only.

Another local user must not be able to plant a file we would trust, read one we wrote, or swap one
behind our back.  So, on POSIX:

- the directory is resolved (no symbolic links left), owned by us or root and writable by nobody else,
  and so is every directory above it, except that a sticky one (``/tmp``) is fine above it: there
  nobody can rename or remove what we own;
- the file itself is not a symbolic link (opened with ``O_NOFOLLOW``), is a regular file owned by
  us, and has no permission bits for group or others.

"Writable by nobody else" allows a directory writable by its group when that group is our own private
group (a group named after us, holding nobody else), as on systems with user-private groups.
On Windows, where these bits mean nothing, only symbolic links are refused (docs/security.md).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

_POSIX = os.name == "posix"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
MAX_PRIVATE_FILE_BYTES = 1 << 20


class UnsafeFileError(Exception):
    """A file or directory that others could read, plant or replace; the message names it and the fix."""


def private_directory(directory: Path, *, create: bool = False) -> Path:
    """``directory`` resolved, after checking that no other user can change it or anything above it;
    with ``create``, a missing directory is made with mode 0700 first, else FileNotFoundError."""
    if create and not os.path.lexists(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
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
    directory = private_directory(path.parent)
    descriptor = _open(directory / path.name, os.O_RDONLY, display=path)
    try:
        _check_file(descriptor, path, tighten=False)
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(descriptor)
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


def open_private(path: Path, flags: int) -> int:
    """A descriptor for a private file made (mode 0600) when missing, e.g. a log or a lock file.  One of
    ours that has become readable by others is tightened to 0600; one that is not ours is refused."""
    directory = private_directory(path.parent, create=True)
    descriptor = _open(directory / path.name, flags | os.O_CREAT, display=path)
    try:
        _check_file(descriptor, path, tighten=True)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _open(path: Path, flags: int, *, display: Path) -> int:
    if not _POSIX and os.path.islink(path):
        raise UnsafeFileError(f"{display} is a symbolic link; remove it (a private file is never a link).")
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0), 0o600)
    except OSError:
        if os.path.islink(path):  # O_NOFOLLOW's refusal (ELOOP on Linux and macOS, EMLINK on FreeBSD)
            raise UnsafeFileError(f"{display} is a symbolic link; remove it "
                                  "(a private file is never a link).") from None
        raise


def _check_file(descriptor: int, display: Path, *, tighten: bool) -> None:
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFileError(f"{display} is not a regular file; remove it.")
    if not _POSIX:
        return
    if info.st_uid != os.geteuid():
        raise UnsafeFileError(
            f"{display} belongs to another user ({_owner_name(info.st_uid)}), who could have planted it: remove it "
            "(or point NEURAL_STYLE_CONNECTION elsewhere)."
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        if tighten:
            os.fchmod(descriptor, 0o600)
        else:
            raise UnsafeFileError(
                f"{display} can be read or changed by other users (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"restrict it with chmod 600 {display}, or remove it and restart the daemon."
            )


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

