"""A daemon on another machine, seen from the client side: which endpoints need CURVE, the invitation
files ``daemon invite`` writes, liveness limits for a network, and errors that name the remote endpoint.
Torch-free and socket-free (the bridge's GIMP side has no pyzmq); the ZeroMQ client probes a handshake.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from ..wire.connection import ConnectionFileError, ConnectionInfo, CurveKeys, read_connection_file
from ..wire.private_files import UnsafeFileError

SILENCE_ENV_VAR = "NEURAL_STYLE_DAEMON_SILENCE_S"
LOCAL_DAEMON_SILENCE_S = 4.0  # a client gives up on a silent local daemon after this long during a job
REMOTE_DAEMON_SILENCE_S = 15.0  # the default written into invitation files: a network has jitter
LOCAL_CLIENT_TIMEOUT_S = 1.5  # the daemon cancels a job whose client has not heartbeaten for this long
REMOTE_CLIENT_TIMEOUT_S = 10.0  # the same on an endpoint other machines reach


class InsecureEndpointError(Exception):
    """The endpoint would let peers in without CURVE."""


def endpoint_host(endpoint: str) -> str | None:
    """The host part of a tcp:// endpoint ("*" for any interface), or None for another scheme."""
    if not endpoint.startswith("tcp://"):
        return None
    address = endpoint.removeprefix("tcp://")
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    """True for ipc:// and for TCP on a loopback address: only this machine can reach it."""
    host = endpoint_host(endpoint)
    if host is None:
        return endpoint.startswith("ipc://")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: possibly reachable from elsewhere


def is_wildcard(endpoint: str) -> bool:
    return endpoint_host(endpoint) in ("*", "0.0.0.0", "::")


def require_curve(endpoint: str, *, curve_available: bool) -> None:
    """Refuse a TCP endpoint when this pyzmq cannot do CURVE: the daemon never serves TCP without it,
    on loopback (other local users) or, all the more, on an address other machines reach."""
    if endpoint.startswith("tcp://") and not curve_available:
        where = "on loopback" if is_loopback(endpoint) else "reachable from other machines"
        raise InsecureEndpointError(
            f"Refusing to serve {endpoint} ({where}) without CurveZMQ, which this pyzmq/libzmq lacks; "
            "install a pyzmq wheel from PyPI (they include libsodium), or use the default ipc:// endpoint.")


def default_client_timeout_s(endpoint: str | None) -> float:
    return LOCAL_CLIENT_TIMEOUT_S if endpoint is None or is_loopback(endpoint) else REMOTE_CLIENT_TIMEOUT_S


def daemon_silence_limit_s(info: ConnectionInfo, environ: Mapping[str, str] = os.environ) -> float:
    """How long a client waits for word from the daemon during a job: $NEURAL_STYLE_DAEMON_SILENCE_S, else
    the connection file's value, else the local default."""
    try:
        configured = float(environ.get(SILENCE_ENV_VAR, "") or 0)
    except ValueError:
        configured = 0.0
    return configured if configured > 0 else info.daemon_silence_s or LOCAL_DAEMON_SILENCE_S


def invitation_info(endpoint: str, server_public: str, client_public: str, client_secret: str, name: str,
                    *, max_frame_bytes: int, daemon_silence_s: float = REMOTE_DAEMON_SILENCE_S) -> ConnectionInfo:
    """What an invitation file holds.  The endpoint must be one the client can dial: not a wildcard."""
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"an invitation needs the daemon's tcp:// endpoint, not {endpoint}")
    if is_wildcard(endpoint) or endpoint.endswith(":0"):
        raise ValueError(f"{endpoint} is where the daemon listens, not an address a client can dial: "
                         "give --endpoint tcp://HOST:PORT with this machine's address or name")
    return ConnectionInfo(endpoint, pid=0, curve=CurveKeys(server_public, client_public, client_secret),
                          max_frame_bytes=max_frame_bytes, invitation=name, daemon_silence_s=daemon_silence_s)


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
