"""How the plug-in reaches the daemon from where it runs (remote invitation, Flatpak sandbox or neither): which
connection file, whether and how it may start a daemon, and what to tell the user when it may not
(docs/scaling.md).  Standard library only (with the wire records): install.py and GIMP's Python use it."""

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
    may_spawn = parser.get("Session Bus Policy", "org.freedesktop.Flatpak", fallback="") == "talk"
    return Sandbox(parser.get("Application", "name", fallback=""), may_spawn)


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
    return plugin_dir.resolve().is_relative_to((home / ".var" / "app" / app_id).resolve())


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
    recorded = record.get("connection_file")
    connection = environ.get(CONNECTION_ENV_VAR) or (recorded if isinstance(recorded, str) else None)
    connection_file = Path(connection) if connection else None
    start = _command(record.get("start_command"))
    bridge = _command(record.get("bridge_command"))
    if connection_file is not None and (remote := remote_info(connection_file)) is not None:
        return LaunchPlan(connection_file, None, bridge, remote.endpoint,
                          f"The daemon runs on another machine ({remote.endpoint}, connection file {connection_file}): "
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
    start_on_host = spawn_on_host(host, connection_file) if sandbox.may_spawn_on_host and host else None
    return LaunchPlan(connection_file, start_on_host, None, None, advice)


def _command(value: object) -> list[str] | None:
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        return list(value)
    return None
