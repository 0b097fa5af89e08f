"""Files only their owner may read or change: the connection file, the daemon's lock and log.  Standard
library only.  Another local user must not be able to plant a file we would trust, read one we wrote, or swap
one behind our back: the rules for directories and files are in docs/security.md ("Private files")."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

_POSIX = os.name == "posix"
_OPEN_FLAGS = sum(getattr(os, name, 0) for name in ("O_NOFOLLOW", "O_CLOEXEC", "O_BINARY", "O_NONBLOCK"))
MAX_PRIVATE_FILE_BYTES = 1 << 20
_MAX_LINKS = 40  # as the kernel's own limit when it resolves a path


class UnsafeFileError(Exception):
    """A file or directory that others could read, plant or replace; the message names it and the fix."""


def private_directory(directory: Path, *, create: bool = False) -> Path:
    """``directory`` resolved, after checking every step of the way to it: each directory passed through can be
    changed by nobody but us or root (sticky ones like /tmp excepted), each link on the way is one nobody else
    could have planted, and the directory itself is ours or root's and writable by nobody else.  With
    ``create``, missing directories are made with mode 0700 whatever the umask; else FileNotFoundError."""
    if not _POSIX:
        if create:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        resolved = Path(os.path.realpath(directory))
        if not stat.S_ISDIR(os.stat(resolved).st_mode):  # FileNotFoundError when missing
            raise UnsafeFileError(f"{directory} is not a directory.")
        return resolved
    current, pending, links = Path("/"), list(reversed(Path(os.getcwd(), directory).parts)), 0
    while pending:  # the steps still to take; "/" (current / "/" is "/") starts again from the root
        name = pending.pop()
        if name == "..":
            current = current.parent
            continue
        step = current / name
        if create and not os.path.lexists(step):
            _make_private_directory(step)
        info = os.lstat(step)  # FileNotFoundError when missing: nothing there to trust or distrust
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise UnsafeFileError(f"{directory}: too many symbolic links on the way.")
            # Trusted where nobody else can write, or when we or root made it (in a sticky directory like /tmp
            # only its owner can remove or replace it).
            if not _owned_by_us_or_root(info) and _writable_by_others(os.stat(current)):
                raise UnsafeFileError(
                    f"{step} is a symbolic link that {_owner_name(info.st_uid)} made in a directory others can write "
                    f"to ({current}): it could lead anywhere, so it is not followed; use the path it should lead to."
                )
            pending.extend(reversed(Path(os.readlink(step)).parts))
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeFileError(f"{step} is not a directory.")
        if pending and not _passable(info):
            raise UnsafeFileError(
                f"The directory {step}, above {directory}, can be changed by other users ({_describe(info)}), "
                f"who could replace {directory}: use a directory elsewhere."
            )
        current = step
    info = os.stat(current)
    if not _owned_by_us_or_root(info) or _writable_by_others(info):
        raise UnsafeFileError(
            f"The directory {directory} can be changed by other users ({_describe(info)}), who could plant or "
            f"replace files in it: use a directory only you can write to (chmod go-w {current}, or choose another)."
        )
    return current


def _passable(info: os.stat_result) -> bool:
    """A directory to pass through: nobody else can rename or replace what we put in it."""
    return _owned_by_us_or_root(info) and (not _writable_by_others(info) or bool(info.st_mode & stat.S_ISVTX))


def _make_private_directory(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return  # made meanwhile: checked like any other
    os.chmod(path, 0o700)  # the umask may have taken the owner's bits too


def read_private_file(path: Path, *, limit: int = MAX_PRIVATE_FILE_BYTES) -> bytes:
    """The bytes of a private file; UnsafeFileError if it or its directory is not private,
    FileNotFoundError if it does not exist."""
    return _read(open_private(path, os.O_RDONLY, create=False), path, limit)


def read_own_file(path: Path, *, limit: int = MAX_PRIVATE_FILE_BYTES) -> bytes:
    """The bytes of a file of ours whatever its mode, changing nothing: to tell whether it is one we may replace.
    FileNotFoundError when missing; UnsafeFileError for a link, something not a regular file, another user's."""
    return _read(open_own(path, os.O_RDONLY), path, limit)


def _read(descriptor: int, path: Path, limit: int) -> bytes:
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFileError(f"{path} is larger than {limit} bytes; it is not a file this program wrote.")
    return data


def write_private_file(path: Path, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``, mode 0600, in a private directory (made 0700 when
    missing): a crash or a full disk leaves the old file or the new one, whole.  Whatever was at the path,
    a symbolic link included, is replaced, never followed."""
    directory = private_directory(path.parent, create=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=directory)  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on the disk before the rename makes it the file
        os.replace(temporary, directory / path.name)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a full disk: say which file
            error.filename = str(path)
        raise
    return directory / path.name


def open_private(path: Path, flags: int, *, create: bool = True) -> int:
    """A descriptor for a private file.  With ``create`` (a log or a lock file), one missing is made (mode 0600,
    its directory 0700), and one of ours that has become readable by others is tightened to 0600; without (a
    file to read), FileNotFoundError for one missing and UnsafeFileError for one readable by others."""
    descriptor = open_own(path, flags | (os.O_CREAT if create else 0))
    try:
        mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
        if _POSIX and mode & 0o077:
            if not create:
                raise UnsafeFileError(f"{path} can be read or changed by other users (mode {mode:04o}): "
                                      f"restrict it with chmod 600 {path}, or remove it and restart the daemon.")
            os.fchmod(descriptor, 0o600)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def open_own(path: Path, flags: int) -> int:
    """A descriptor for a regular file of ours in a private directory, never through a link; with ``os.O_CREAT``
    in ``flags``, one missing is made (0600, its directories 0700).  FileNotFoundError for one missing,
    UnsafeFileError for a link, something not a regular file (a FIFO is not waited on), or another user's file."""
    directory = private_directory(path.parent, create=bool(flags & os.O_CREAT))
    target = directory / path.name
    try:
        if not _POSIX and os.path.islink(target):  # no O_NOFOLLOW there
            raise OSError(f"{target} is a link")
        descriptor = os.open(target, flags | _OPEN_FLAGS, 0o600)
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

