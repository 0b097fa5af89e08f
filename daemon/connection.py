"""The connection file: where the daemon listens and the key that signs its messages.  Torch-free.

Written with mode 0600 inside a per-user 0700 directory, like Jupyter's kernel connection files;
``$NEURAL_STYLE_CONNECTION`` overrides the path.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .protocol import PROTOCOL_VERSION, SIGNATURE_SCHEME

CONNECTION_ENV_VAR = "NEURAL_STYLE_CONNECTION"
APP_DIR_NAME = "neural-style-gimp"


class ConnectionFileError(Exception):
    """The connection file is missing, unreadable or malformed; the message says which and why."""


@dataclass(frozen=True)
class ConnectionInfo:
    endpoint: str
    key: str  # hex
    signature_scheme: str = SIGNATURE_SCHEME
    protocol_version: int = PROTOCOL_VERSION
    pid: int = 0

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)


def runtime_dir() -> Path:
    """Per-user directory for the connection file: the platform's runtime or application-data place."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / APP_DIR_NAME


def connection_path() -> Path:
    override = os.environ.get(CONNECTION_ENV_VAR)
    return Path(override) if override else runtime_dir() / "connection.json"


def write_connection_file(info: ConnectionInfo, path: Path | None = None) -> Path:
    """Atomically write ``info`` with mode 0600, creating the directory with mode 0700 if needed."""
    path = path or connection_path()
    _ensure_private_directory(path.parent)
    descriptor, temporary = tempfile.mkstemp(prefix=".connection-", dir=path.parent)  # created 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(asdict(info), handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _ensure_private_directory(directory: Path) -> None:
    """Create the directory 0700; tighten our own application directory if it exists looser (but never
    touch a directory the user chose through the environment variable, such as /tmp)."""
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    elif os.name == "posix" and directory.name == APP_DIR_NAME:
        os.chmod(directory, 0o700)


def read_connection_file(path: Path | None = None) -> ConnectionInfo:
    path = path or connection_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConnectionFileError(f"No daemon connection file at {path}: the daemon is not running (start it with: python -m daemon start).") from None
    except (OSError, ValueError) as error:
        raise ConnectionFileError(f"The daemon connection file {path} cannot be read ({error}).") from None
    try:
        info = ConnectionInfo(
            endpoint=str(data["endpoint"]),
            key=str(data["key"]),
            signature_scheme=str(data.get("signature_scheme", SIGNATURE_SCHEME)),
            protocol_version=int(data.get("protocol_version", 0)),
            pid=int(data.get("pid", 0)),
        )
        info.key_bytes  # noqa: B018  (validates the hex)
    except (KeyError, TypeError, ValueError) as error:
        raise ConnectionFileError(f"The daemon connection file {path} is malformed ({error}).") from None
    if info.signature_scheme != SIGNATURE_SCHEME:
        raise ConnectionFileError(f"The daemon at {path} signs with {info.signature_scheme}, not {SIGNATURE_SCHEME}.")
    return info


def remove_connection_file(path: Path | None = None, *, pid: int | None = None) -> None:
    """Remove the file, but only if it still belongs to ``pid`` (when given): never a newer daemon's."""
    path = path or connection_path()
    if pid is not None:
        try:
            if read_connection_file(path).pid != pid:
                return
        except ConnectionFileError:
            return
    path.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name != "posix":
        return True  # cannot tell cheaply; the caller pings instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
