"""Flatpak GIMP and remote daemons, as the plug-in decides them (daemon/client/launch.py) and install.py records
them: without Flatpak, from a fake ``/.flatpak-info`` and a fake home."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import zmq

from daemon.client import launch
from daemon.wire.connection import ConnectionInfo, CurveKeys, write_connection_file

from .daemon_harness import REPO_ROOT, load_script

SPAWN_ALLOWED = """[Application]
name=org.gimp.GIMP
runtime=runtime/org.gnome.Platform/x86_64/47

[Context]
shared=network;ipc;

[Session Bus Policy]
org.freedesktop.Flatpak=talk
org.gtk.vfs.*=talk
"""
SPAWN_DENIED = SPAWN_ALLOWED.replace("org.freedesktop.Flatpak=talk\n", "")


def fake_info(tmp_path, text):
    path = tmp_path / "flatpak-info"
    path.write_text(text)
    return path


def invitation(path, endpoint="tcp://gpu-box:5557"):
    keys = CurveKeys(*(zmq.curve_keypair()[0].decode() for _ in range(3)))
    write_connection_file(ConnectionInfo(endpoint, curve=keys, invitation="laptop"), path)
    return path


def test_sandbox_detection(tmp_path):
    assert launch.flatpak_sandbox(tmp_path / "absent") is None
    assert launch.flatpak_sandbox(fake_info(tmp_path, SPAWN_ALLOWED)) == launch.Sandbox("org.gimp.GIMP", True)
    assert launch.flatpak_sandbox(fake_info(tmp_path, SPAWN_DENIED)) == launch.Sandbox("org.gimp.GIMP", False)
    assert launch.flatpak_sandbox(fake_info(tmp_path, "not a keyfile [")) == launch.Sandbox("", False)
    assert (launch.flatpak_permissions_allow_spawn(SPAWN_ALLOWED)
            and not launch.flatpak_permissions_allow_spawn(SPAWN_DENIED))


def test_install_records_a_flatpak_gimp_with_the_connection_file_both_sides_see(tmp_path):
    install = load_script("install.py")
    home = tmp_path / "home"
    plugin_dir = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0" / "plug-ins"
    assert install.launch.is_flatpak_plugin_dir(plugin_dir, home)
    assert not install.launch.is_flatpak_plugin_dir(home / ".config" / "GIMP" / "3.0" / "plug-ins", home)
    shared = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "neural-style-gimp" / "connection.json"

    allowed = install.plugin_record(weights=None, flatpak=True, home=home, may_spawn=True, connection_file=None)
    python = str(install.venv_python())
    assert allowed["connection_file"] == str(shared)
    assert allowed["host_start_command"][:4] == [python, "-m", "daemon", "start"]
    assert allowed["start_command"] == ["flatpak-spawn", "--host", f"--env=NEURAL_STYLE_CONNECTION={shared}",
                                        *allowed["host_start_command"]]
    assert allowed["bridge_command"] is None  # a host program the sandbox cannot run

    denied = install.plugin_record(weights=None, flatpak=True, home=home, may_spawn=False, connection_file=None)
    assert denied["start_command"] is None and denied["host_start_command"] == allowed["host_start_command"]

    plain = install.plugin_record(weights=None, flatpak=False, home=home, may_spawn=False, connection_file=None)
    assert plain["start_command"][1:] == ["-m", "daemon", "start"] and "connection_file" not in plain


def test_a_long_home_makes_the_host_daemon_use_tcp_since_the_sandbox_has_its_own_tmp():
    from pathlib import Path

    short = launch.flatpak_connection_file(Path("/home/ann"))  # its socket path: 67 bytes
    long = launch.flatpak_connection_file(Path("/home") / ("a" * 40))
    assert "--endpoint" not in launch.host_start_command("/venv/python", short)
    assert launch.host_start_command("/venv/python", long)[-2:] == ["--endpoint", "tcp://127.0.0.1:0"]


def test_plug_in_plans_inside_and_outside_the_sandbox(tmp_path, monkeypatch):
    install = load_script("install.py")
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    record = install.plugin_record(weights=None, flatpak=True, home=home, may_spawn=True, connection_file=None)
    allowed, denied = fake_info(tmp_path, SPAWN_ALLOWED), tmp_path / "denied-info"
    denied.write_text(SPAWN_DENIED)

    plan = launch.plan_launch(record, flatpak_info=allowed, environ={})
    assert plan.start_command == record["start_command"] and plan.bridge_command is None
    assert plan.connection_file == launch.flatpak_connection_file(home)

    # Not allowed to spawn on the host: nothing to start, and the advice is the one host command.
    denied_record = dict(record, start_command=None)
    plan = launch.plan_launch(denied_record, flatpak_info=denied, environ={})
    assert plan.start_command is None and plan.remote_endpoint is None
    command = plan.advice.split("Start it on the host with: ", 1)[1]
    assert shlex.split(command) == [f"NEURAL_STYLE_CONNECTION={plan.connection_file}", *record["host_start_command"]]
    # Even a record made outside Flatpak (no host command recorded) yields a sandbox-aware plan inside one.
    plain = install.plugin_record(weights=None, flatpak=False, home=home, may_spawn=False, connection_file=None)
    plan = launch.plan_launch(plain, flatpak_info=denied, environ={})
    assert plan.start_command is None and "Flatpak sandbox" in plan.advice

    # Outside any sandbox, the recorded commands as they are.
    plan = launch.plan_launch(plain, flatpak_info=tmp_path / "absent", environ={})
    assert plan.start_command == plain["start_command"] and plan.bridge_command == plain["bridge_command"]
    assert plan.connection_file is None


def test_a_remote_connection_never_starts_a_local_daemon(tmp_path):
    install = load_script("install.py")
    remote = invitation(tmp_path / "remote.json")
    record = install.plugin_record(weights=None, flatpak=False, home=tmp_path, may_spawn=False, connection_file=remote)
    assert record["connection_file"] == str(remote)
    for info_file in (tmp_path / "absent", fake_info(tmp_path, SPAWN_ALLOWED)):
        plan = launch.plan_launch(record, flatpak_info=info_file, environ={})
        assert plan.start_command is None and plan.remote_endpoint == "tcp://gpu-box:5557"
        assert "tcp://gpu-box:5557" in plan.advice
    # $NEURAL_STYLE_CONNECTION wins over the record, as for the command line.
    local = tmp_path / "local.json"
    keys = CurveKeys(*(zmq.curve_keypair()[0].decode() for _ in range(3)))
    write_connection_file(ConnectionInfo("tcp://127.0.0.1:5", pid=1, curve=keys), local)
    plan = launch.plan_launch(record, flatpak_info=tmp_path / "absent", environ={"NEURAL_STYLE_CONNECTION": str(local)})
    assert plan.remote_endpoint is None and plan.start_command == record["start_command"]
    # Without pyzmq and msgpack (a plug-in using the bridge), the invitation is still recognised.
    code = ("import json, sys\nsys.modules['zmq'] = sys.modules['msgpack'] = None\n"
            "from daemon.client import launch\n"
            "print(json.dumps([launch.plan_launch({}, environ={'NEURAL_STYLE_CONNECTION': path}).remote_endpoint "
            "for path in sys.argv[1:]]))")
    completed = subprocess.run([sys.executable, "-c", code, str(remote), str(local)], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True)
    assert json.loads(completed.stdout) == ["tcp://gpu-box:5557", None]


def test_install_connect_copies_the_file_into_a_flatpak_gimps_folder(tmp_path, monkeypatch):
    install = load_script("install.py")
    home = tmp_path / "home"
    plugin_dir = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0" / "plug-ins"
    source = invitation(tmp_path / "laptop.json")
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": 1})())  # no pip
    target = install.install_plugin(plugin_dir, "3.12", connect=source, home=home, may_spawn=False)
    record = json.loads((target / "install.json").read_text())
    copied = launch.flatpak_connection_file(home).with_name("remote.json")
    assert record["connection_file"] == str(copied)
    assert copied.read_bytes() == source.read_bytes() and (copied.stat().st_mode & 0o777) == 0o600
    assert launch.plan_launch(record, flatpak_info=tmp_path / "absent", environ={}).remote_endpoint == "tcp://gpu-box:5557"
