"""A daemon on another machine, seen from the client side: the invitation file that names it, how long
to wait for it, and errors that name the remote endpoint.
Torch-free and socket-free (the bridge's GIMP side has no pyzmq); the ZeroMQ client probes a handshake.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path

from ..wire.connection import ConnectionFileError, ConnectionInfo, read_connection_file
from ..wire.private_files import UnsafeFileError

SILENCE_ENV_VAR = "NEURAL_STYLE_DAEMON_SILENCE_S"
LOCAL_DAEMON_SILENCE_S = 4.0  # a client gives up on a silent local daemon after this long during a job


def daemon_silence_limit_s(info: ConnectionInfo, environ: Mapping[str, str] = os.environ) -> float:
    """How long a client waits for word from the daemon during a job: $NEURAL_STYLE_DAEMON_SILENCE_S, else
    the connection file's value, else the local default."""
    try:
        configured = float(environ.get(SILENCE_ENV_VAR, "") or 0)
    except ValueError:
        configured = 0.0
    return configured if configured > 0 else info.daemon_silence_s or LOCAL_DAEMON_SILENCE_S


def remote_info(path: Path) -> ConnectionInfo | None:
    """The connection file at ``path`` when it is an invitation to a remote daemon, else None (a local
    daemon's file, or none readable: the caller reports that as usual)."""
    try:
        info = read_connection_file(path)
    except (ConnectionFileError, UnsafeFileError, OSError):
        return None
    return info if info.remote else None


class Handshake(str, enum.Enum):
    SUCCEEDED = "succeeded"
    KEY_REFUSED = "key_refused"  # the daemon's ZAP handler refused our key: never invited, or revoked
    SERVER_KEY_MISMATCH = "server_key_mismatch"  # connected, but the daemon dropped the handshake
    NO_CONNECTION = "no_connection"  # nothing accepted a TCP connection there


def unreachable_message(info: ConnectionInfo, path: Path, outcome: Handshake | None) -> str:
    """One line for a user whose remote daemon cannot be used; it names the endpoint and the file."""
    where = f"The remote Neural Style daemon at {info.endpoint} (connection file {path})"
    if outcome is Handshake.KEY_REFUSED:
        return (f"{where} refused this client's key: the invitation {info.invitation!r} was revoked or is not "
                "this daemon's. Ask for a new one (python -m daemon invite on the daemon's machine).")
    if outcome is Handshake.SERVER_KEY_MISMATCH:
        return (f"{where} dropped the CURVE handshake: the server key in the file is not that daemon's (another "
                "daemon took the port, or its key file was made anew). Ask for a new invitation.")
    if outcome is Handshake.NO_CONNECTION:
        return (f"{where} cannot be reached: is the daemon running on that machine (python -m daemon start "
                "--endpoint …), and does the network let this machine reach that port?")
    return (f"{where} does not answer; this machine never starts a daemon for it. Check that it runs on that "
            "machine and that the network reaches it.")
