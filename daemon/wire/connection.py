"""The connection file: where the daemon listens and, over TCP, the CURVE keys to reach it.  Torch-free.

The daemon writes it with mode 0600 into a directory only its user can change (a per-user 0700
directory by default, like Jupyter's kernel connection files; ``$NEURAL_STYLE_CONNECTION`` overrides
the path).  Clients refuse a file that another user could have planted, read or replaced
(:mod:`daemon.wire.private_files`).  Beside it live the daemon's lock file, log and, by default, its socket
(:class:`DaemonFiles`).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .limits import MessageCaps
from .messages import PROTOCOL_VERSION
from .private_files import UnsafeFileError, private_directory, read_own_file, read_private_file, write_private_file

CONNECTION_ENV_VAR = "NEURAL_STYLE_CONNECTION"
APP_DIR_NAME = "neural-style-gimp"
_UNIX_SOCKET_PATH_BYTES = 100
_Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


class ConnectionFileError(Exception):
    """The connection file is missing, unreadable or malformed; the message says which and why."""


@dataclass(frozen=True)
class CurveKeys:
    """A client's CurveZMQ key pair and the daemon's public key, Z85-encoded (40 characters each)."""

    server_public: str
    client_public: str
    client_secret: str = field(repr=False)  # never in a log line or a traceback

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, str) or not _Z85_KEY.fullmatch(value):
                raise ValueError(f"curve.{name} is not a Z85-encoded 32-byte key")


@dataclass(frozen=True)
class ConnectionInfo:
    endpoint: str  # ipc://… (the file permissions authenticate) or tcp://… (CURVE authenticates)
    protocol_version: int = PROTOCOL_VERSION
    pid: int = 0
    curve: CurveKeys | None = None
    max_frame_bytes: int = 0  # 0: each image travels as one frame
    invitation: str | None = None  # the client's name, in the files ``daemon invite`` writes (see remote)
    daemon_silence_s: float = 0.0  # how long a job's client waits for word from the daemon; 0: the default

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("ipc://", "tcp://")):
            raise ValueError(f"endpoint {self.endpoint!r} is neither ipc:// nor tcp://")
        if self.endpoint.startswith("tcp://") and self.curve is None:
            raise ValueError("a tcp:// endpoint needs CURVE keys (an unauthenticated TCP endpoint is never used)")
        if self.max_frame_bytes < 0:
            raise ValueError("max_frame_bytes must not be negative")
        if not 0 <= self.daemon_silence_s <= 3600:
            raise ValueError("daemon_silence_s must be from 0 to 3600 seconds")

    @property
    def remote(self) -> bool:
        """An invitation to a daemon that this side must never start."""
        return self.invitation is not None

    @property
    def caps(self) -> MessageCaps:
        return MessageCaps.for_images(max_frame_bytes=self.max_frame_bytes or None)

    def to_json(self) -> dict[str, Any]:
        unset = {"curve": None, "invitation": None, "daemon_silence_s": 0.0}  # left out
        return {name: value for name, value in asdict(self).items() if name not in unset or value != unset[name]}


@dataclass(frozen=True)
class DaemonFiles:
    """The files of the daemon that serves one connection file, all in that file's directory."""

    connection: Path
    lock: Path  # held (flock / msvcrt.locking) by the running daemon, which also records itself in it
    log: Path  # the background daemon's output (python -m daemon start)
    socket: Path  # the default ipc:// endpoint, when the directory is owner-only and the path short enough

    @property
    def socket_fits(self) -> bool:
        """Whether :attr:`socket` fits in a socket address (sun_path: 108 bytes on Linux, 104 on macOS, with the
        terminating NUL); a longer one goes to the temporary directory, which a sandbox does not share."""
        return len(os.fsencode(self.socket)) <= _UNIX_SOCKET_PATH_BYTES

    @classmethod
    def beside(cls, connection: Path) -> DaemonFiles:
        stem = connection.stem if connection.suffix == ".json" else connection.name
        return cls(connection, *(connection.with_name(f"{stem}.{suffix}") for suffix in ("lock", "log", "sock")))


def runtime_dir() -> Path:
    """Per-user directory for the connection file: the platform's runtime or application-data place."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_STATE_HOME")
                    or Path.home() / ".local" / "state")
    return base / APP_DIR_NAME


def connection_path() -> Path:
    override = os.environ.get(CONNECTION_ENV_VAR)
    return Path(override) if override else runtime_dir() / "connection.json"


def prepare_directory(path: Path) -> None:
    """Make ready for the daemon's files: create the connection file's directory (0700) if missing, tightening our
    own application directory to 0700.  UnsafeFileError for a directory others can change, and where the daemon
    would replace what is not its own: anything but a connection file at ``path``, anything but a socket at the
    socket's path (the lock's is checked as it is taken: daemon.server.lifecycle)."""
    directory = path.parent
    if os.name == "posix" and directory.name == APP_DIR_NAME and directory.is_dir() and not directory.is_symlink():
        if directory.stat().st_uid == os.geteuid():
            os.chmod(directory, 0o700)
    private_directory(directory, create=True)
    _refuse_to_replace(path)
    socket = DaemonFiles.beside(path).socket
    if os.path.lexists(socket) and not stat.S_ISSOCK(os.lstat(socket).st_mode):
        raise UnsafeFileError(f"{socket} is not a socket, and the daemon would replace it with its own: move it away, "
                              f"or set {CONNECTION_ENV_VAR} to another path.")


def _refuse_to_replace(path: Path) -> None:
    """UnsafeFileError unless ``path`` is missing or a connection file (of a daemon that ran before)."""
    try:
        _parse(read_own_file(path), path)
    except FileNotFoundError:
        return
    except ConnectionFileError:
        raise UnsafeFileError(f"{path} is not a daemon connection file, and the daemon would replace it: set "
                              f"{CONNECTION_ENV_VAR} to a path of the daemon's own.") from None


def write_connection_file(info: ConnectionInfo, path: Path | None = None) -> Path:
    """Atomically write ``info`` with mode 0600; UnsafeFileError if the directory is not private or something other
    than a connection file is at ``path``."""
    path = path or connection_path()
    private_directory(path.parent, create=True)
    _refuse_to_replace(path)
    return write_private_file(path, json.dumps(info.to_json()).encode())


def read_connection_file(path: Path | None = None) -> ConnectionInfo:
    """The connection file's content; ConnectionFileError when it is missing or malformed, UnsafeFileError
    when another user could have planted, read or replaced it."""
    path = path or connection_path()
    try:
        data = read_private_file(path)
    except FileNotFoundError:
        raise ConnectionFileError(f"No daemon connection file at {path}: the daemon is not running "
                                  "(start it with: python -m daemon start).") from None
    except OSError as error:
        raise ConnectionFileError(f"The daemon connection file {path} cannot be read ({error}).") from None
    return _parse(data, path)


def _parse(data: bytes, path: Path) -> ConnectionInfo:
    try:
        fields = json.loads(data.decode("utf-8"))
        return ConnectionInfo(
            endpoint=str(fields["endpoint"]),
            protocol_version=int(fields.get("protocol_version", 0)),
            pid=int(fields.get("pid", 0)),
            curve=None if fields.get("curve") is None else CurveKeys(**fields["curve"]),
            max_frame_bytes=int(fields.get("max_frame_bytes", 0)),
            invitation=None if fields.get("invitation") is None else str(fields["invitation"]),
            daemon_silence_s=float(fields.get("daemon_silence_s", 0.0)),
        )
    except (AttributeError, KeyError, TypeError, ValueError, RecursionError) as error:  # ValueError: bad UTF-8 too
        raise ConnectionFileError(f"The daemon connection file {path} is malformed ({error}).") from None


def remove_connection_file(path: Path | None = None, *, pid: int) -> None:
    """Remove the file, but only if it is a connection file that still belongs to ``pid``: never another file at its
    path, never a newer daemon's."""
    path = path or connection_path()
    try:
        if read_connection_file(path).pid != pid:
            return
    except (ConnectionFileError, UnsafeFileError):
        return
    path.unlink(missing_ok=True)
