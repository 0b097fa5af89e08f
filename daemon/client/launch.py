"""How the plug-in reaches the daemon from where it runs: which connection file, whether and how it may
start a daemon, and what to tell the user when it may not.  Standard library only (with the wire
records): install.py uses it with whatever Python runs it, and the plug-in with GIMP's.

The plug-in calls :func:`plan_launch` with its install record (``install.json``) and then
``connect_any(start_command=plan.start_command, bridge_command=plan.bridge_command)`` after setting
``NEURAL_STYLE_CONNECTION`` to ``plan.connection_file`` (when not None); when no daemon answers and
``plan.start_command`` is None it shows ``plan.advice``.

Three cases:

- **Remote** (the connection file is an invitation from ``daemon invite``): never start anything here;
  errors name the remote endpoint.
- **Flatpak GIMP** (``/.flatpak-info`` exists): the sandbox cannot see the host's runtime directory nor
  run the host's ``.venv``.  The connection file lives in the app's own config folder, which the host
  and the sandbox both see at the same path; the daemon is started on the host through
  ``flatpak-spawn --host`` when the app may talk to ``org.freedesktop.Flatpak``, else the user is given
  the one command to run on the host.  The bridge (a host Python) cannot run from the sandbox.
- **Anything else**: the recorded start and bridge commands as they are.
"""

from __future__ import annotations

import configparser
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..wire.connection import APP_DIR_NAME, CONNECTION_ENV_VAR, DaemonFiles
from .remote import remote_info

FLATPAK_INFO = Path("/.flatpak-info")
GIMP_FLATPAK_APP = "org.gimp.GIMP"


@dataclass(frozen=True)
class Sandbox:
    app_id: str
    may_spawn_on_host: bool  # the app may talk to org.freedesktop.Flatpak: flatpak-spawn --host works


def flatpak_sandbox(info_path: Path = FLATPAK_INFO) -> Sandbox | None:
    """The Flatpak sandbox this process runs in, from its ``/.flatpak-info``; None outside one."""
    if not info_path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # bus names are case-sensitive
    try:
        parser.read(info_path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return Sandbox("", False)  # a sandbox, though we cannot tell what it may do: assume the least
    app_id = parser.get("Application", "name", fallback="")
    policy = parser["Session Bus Policy"] if parser.has_section("Session Bus Policy") else {}
    return Sandbox(app_id, policy.get("org.freedesktop.Flatpak", "") == "talk")


def flatpak_permissions_allow_spawn(permissions: str) -> bool:
    """From ``flatpak info --show-permissions APP`` (the same keyfile format, run on the host at install)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    try:
        parser.read_string(permissions)
    except configparser.Error:
        return False
    return parser.get("Session Bus Policy", "org.freedesktop.Flatpak", fallback="") == "talk"


def flatpak_connection_file(home: Path, app_id: str = GIMP_FLATPAK_APP) -> Path:
    """The connection file both a Flatpak app and the host see: in the app's own config folder, which
    Flatpak mounts into the sandbox at the same path."""
    return home / ".var" / "app" / app_id / "config" / APP_DIR_NAME / "connection.json"


def is_flatpak_plugin_dir(plugin_dir: Path, home: Path, app_id: str = GIMP_FLATPAK_APP) -> bool:
    try:
        plugin_dir.resolve().relative_to((home / ".var" / "app" / app_id).resolve())
    except ValueError:
        return False
    return True


def daemon_command(subcommand: str, *arguments: str, python: str | os.PathLike[str] = sys.executable) -> list[str]:
    """The command line of ``python -m daemon SUBCOMMAND ARGUMENTS…``: the one place it is written (the
    plug-in's start command, ``start`` starting ``serve``, install.py, the Flatpak host command)."""
    return [os.fspath(python), "-m", "daemon", subcommand, *arguments]


def host_start_command(python: str, connection_file: Path, extra: Sequence[str] = ()) -> list[str]:
    """The command that starts the daemon on the host for a Flatpak GIMP.  Its socket must be beside the
    connection file (the sandbox has its own /tmp): when that path is too long for a socket, TCP on
    loopback (with CURVE) instead, which a sandbox with network access shares with the host."""
    command = daemon_command("start", *extra, python=python)
    if not DaemonFiles.beside(connection_file).socket_fits and "--endpoint" not in extra:
        command += ["--endpoint", "tcp://127.0.0.1:0"]
    return command


def spawn_on_host(command: Sequence[str], connection_file: Path) -> list[str]:
    """``command`` run on the host from inside the sandbox (flatpak-spawn passes no environment unasked)."""
    return ["flatpak-spawn", "--host", f"--env={CONNECTION_ENV_VAR}={connection_file}", *command]


def shell_command(command: Sequence[str], connection_file: Path) -> str:
    return f"{CONNECTION_ENV_VAR}={shlex.quote(str(connection_file))} {shlex.join(command)}"


@dataclass(frozen=True)
class LaunchPlan:
    connection_file: Path | None  # None: the default (daemon.wire.connection.connection_path())
    start_command: list[str] | None  # None: never start a daemon from here
    bridge_command: list[str] | None
    remote_endpoint: str | None  # set when the daemon is on another machine
    advice: str  # what to do when no daemon answers


def plan_launch(record: Mapping[str, object], *, flatpak_info: Path = FLATPAK_INFO,
                environ: Mapping[str, str] = os.environ) -> LaunchPlan:
    """The plan for a plug-in installed with ``record`` (install.json), running here."""
    connection = environ.get(CONNECTION_ENV_VAR) or _string(record.get("connection_file"))
    connection_file = Path(connection) if connection else None
    start = _command(record.get("start_command"))
    bridge = _command(record.get("bridge_command"))
    endpoint = _remote_endpoint(connection_file)
    if endpoint is not None:
        return LaunchPlan(connection_file, None, bridge, endpoint,
                          f"The daemon runs on another machine ({endpoint}, connection file {connection_file}): "
                          "start it there; this machine never starts one for it.")
    sandbox = flatpak_sandbox(flatpak_info)
    if sandbox is None:
        return LaunchPlan(connection_file, start, bridge, None,
                          f"Start the daemon with: {shlex.join(start) if start else 'python -m daemon start'}")
    host = _command(record.get("host_start_command")) or start
    if connection_file is None:
        connection_file = flatpak_connection_file(Path.home(), sandbox.app_id or GIMP_FLATPAK_APP)
    on_host = (shell_command(host, connection_file) if host
               else f"{CONNECTION_ENV_VAR}={connection_file} python -m daemon start")
    advice = f"GIMP runs in a Flatpak sandbox and cannot start the daemon itself. Start it on the host with: {on_host}"
    if sandbox.may_spawn_on_host and host:
        return LaunchPlan(connection_file, spawn_on_host(host, connection_file), None, None, advice)
    return LaunchPlan(connection_file, None, None, None, advice)


def _remote_endpoint(connection_file: Path | None) -> str | None:
    info = None if connection_file is None else remote_info(connection_file)
    return None if info is None else info.endpoint


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _command(value: object) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        return list(value)
    return None
