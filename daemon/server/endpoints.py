"""The daemon's endpoints: which need CURVE, how long a client may be silent on each, and the
invitation files ``daemon invite`` writes for clients on other machines."""

from __future__ import annotations

import ipaddress

from ..wire.connection import ConnectionInfo, CurveKeys

REMOTE_DAEMON_SILENCE_S = 15.0  # the default written into invitation files: a network has jitter
LOCAL_CLIENT_TIMEOUT_S = 1.5  # the daemon cancels a job whose client has not heartbeaten for this long
REMOTE_CLIENT_TIMEOUT_S = 10.0  # the same on an endpoint other machines reach


class InsecureEndpointError(Exception):
    """The endpoint would let peers in without CURVE."""


def endpoint_host(endpoint: str) -> str | None:
    """The host part of a tcp:// endpoint ("*" for any interface), or None for another scheme."""
    if not endpoint.startswith("tcp://"):
        return None
    return endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")


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


def invitation_info(endpoint: str, server_public: str, client_public: str, client_secret: str, name: str,
                    *, max_frame_bytes: int, daemon_silence_s: float = REMOTE_DAEMON_SILENCE_S) -> ConnectionInfo:
    """What an invitation file holds.  The endpoint must be one the client can dial: not a wildcard."""
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"an invitation needs the daemon's tcp:// endpoint, not {endpoint}")
    if endpoint_host(endpoint) in ("*", "0.0.0.0", "::") or endpoint.endswith(":0"):
        raise ValueError(f"{endpoint} is where the daemon listens, not an address a client can dial: "
                         "give --endpoint tcp://HOST:PORT with this machine's address or name")
    return ConnectionInfo(endpoint, pid=0, curve=CurveKeys(server_public, client_public, client_secret),
                          max_frame_bytes=max_frame_bytes, invitation=name, daemon_silence_s=daemon_silence_s)
