"""A daemon serving other machines (issue #16): invitations, revocation, refusals, the client's decisions.
127.0.0.2 stands in for another host: the daemon binds it, clients dial it with an invitation file."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import zmq

from daemon import __main__ as daemon_cli
from daemon.client.contract import DaemonJobError, DaemonUnreachableError
from daemon.client.remote import Handshake, daemon_silence_limit_s, remote_info
from daemon.client.zeromq import connect, probe_handshake
from daemon.server.endpoints import (
    InsecureEndpointError,
    default_client_timeout_s,
    invitation_info,
    is_loopback,
    require_curve,
)
from daemon.server.invitations import InvitationError, InvitationStore, keys_path
from daemon.wire.connection import ConnectionInfo, CurveKeys, read_connection_file, write_connection_file

from .daemon_harness import LONG_SETTINGS, REPO_ROOT, TINY_SETTINGS, rgb_image, start_daemon

REMOTE = "tcp://127.0.0.2:0"


def daemon_command(connection_file, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(connection_file))
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def invite(daemon, output, name: str) -> ConnectionInfo:
    completed = daemon_command(daemon.connection_file, "invite", "-o", str(output), "--name", name)
    assert completed.returncode == 0, completed.stderr
    return read_connection_file(output)


def private_dir(path):
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@pytest.fixture
def remote_daemon(tmp_path, weights_file):
    # A long client timeout: a test's client may sit between submit and wait while a command runs.
    running = start_daemon(private_dir(tmp_path / "server"), weights_file, "--lazy", "--endpoint", REMOTE,
                           "--client-timeout", "30")
    yield running
    running.stop()


def test_invited_clients_run_jobs_and_others_are_refused_while_the_daemon_keeps_serving(remote_daemon, tmp_path):
    daemon = remote_daemon
    assert daemon.info.endpoint.startswith("tcp://127.0.0.2:") and daemon.info.curve is not None
    invitation_file = tmp_path / "client" / "laptop.json"
    invitation_file.parent.mkdir(mode=0o700)
    info = invite(daemon, invitation_file, "laptop")
    assert stat.S_IMODE(invitation_file.stat().st_mode) == 0o600
    assert info.endpoint == daemon.info.endpoint and info.remote and info.invitation == "laptop"
    assert info.curve.server_public == daemon.info.curve.server_public
    assert info.curve.client_public != daemon.info.curve.client_public  # a key of its own
    assert "laptop" in daemon_command(daemon.connection_file, "clients").stdout
    # The key file beside the connection file holds public keys only.
    keys = json.loads(keys_path(daemon.connection_file).read_text())
    assert info.curve.client_secret not in json.dumps(keys)

    with connect(invitation_file) as client:
        result = client.stylize(rgb_image(40, 32, 1), [rgb_image(32, 32, 2)], TINY_SETTINGS)
        assert (result.image.spec.width, result.image.spec.height) == (26, 32)

    # A key the daemon never issued, with the right server key: refused at the handshake, named clearly.
    stranger = tmp_path / "client" / "stranger.json"
    public, secret = zmq.curve_keypair()
    write_connection_file(dataclasses.replace(info, curve=CurveKeys(info.curve.server_public, public.decode(),
                                                                    secret.decode())), stranger)
    with pytest.raises(DaemonUnreachableError, match="refused this client's key") as refused:
        connect(stranger, timeout_s=1.0)
    assert info.endpoint in str(refused.value) and str(stranger) in str(refused.value)

    # The right client key but another daemon's server key: the handshake fails, and says so.
    impostor = tmp_path / "client" / "impostor.json"
    other_server, _ = zmq.curve_keypair()
    write_connection_file(
        dataclasses.replace(info, curve=dataclasses.replace(info.curve, server_public=other_server.decode())),
        impostor)
    with pytest.raises(DaemonUnreachableError, match="server key in the file is not that daemon's"):
        connect(impostor, timeout_s=1.0)

    # An invited client can use the daemon but not stop it, and the local commands leave its file alone.
    with connect(invitation_file) as client, pytest.raises(DaemonJobError, match="cannot stop the daemon"):
        client.shutdown()
    for command in ("stop", "start", "serve"):
        completed = daemon_command(invitation_file, command)
        assert completed.returncode == 1 and f"{command} it on that machine" in completed.stderr, command
    status = daemon_command(invitation_file, "status")
    assert status.returncode == 0 and json.loads(status.stdout)["pid"] == daemon.process.pid
    assert read_connection_file(invitation_file) == info and daemon.process.poll() is None

    # Revoked: refused from the next connection on, without a restart, and cut off on the connection it
    # holds (its running job cancelled); the daemon keeps serving the others.
    second_file = tmp_path / "client" / "desk.json"
    invite(daemon, second_file, "desk")
    held = connect(invitation_file)
    job = held.submit(rgb_image(48, 48, 1), [rgb_image(32, 32, 2)], LONG_SETTINGS)
    revoked = daemon_command(daemon.connection_file, "revoke", "laptop")
    assert revoked.returncode == 0 and "is cut" in revoked.stdout
    with pytest.raises(DaemonJobError, match="revoked"):
        held.wait(job)
    held.close()
    assert probe_handshake(info) is Handshake.KEY_REFUSED
    with pytest.raises(DaemonUnreachableError, match="revoked"):
        connect(invitation_file, timeout_s=1.0)
    listed = daemon_command(daemon.connection_file, "clients").stdout
    assert "desk" in listed and "laptop" not in listed
    with connect(second_file) as client:
        client.ping()
        running = [d["running"] for d in client.status().devices]
        assert running == [None]  # the revoked client's job was cancelled
    assert daemon.process.poll() is None
    assert "did not issue" in daemon.log()


def test_invitations_outlive_a_restart_and_a_remote_daemon_is_never_started(tmp_path, weights_file):
    directory = private_dir(tmp_path / "server")
    daemon = start_daemon(directory, weights_file, "--lazy", "--endpoint", "tcp://127.0.0.2:0")
    invitation_file = tmp_path / "laptop.json"
    try:
        port = daemon.info.endpoint.rsplit(":", 1)[1]
        info = invite(daemon, invitation_file, "laptop")
    finally:
        daemon.stop()
    daemon = start_daemon(directory, weights_file, "--lazy", "--endpoint", f"tcp://127.0.0.2:{port}")
    try:
        with connect(invitation_file) as client:  # the same server key after the restart
            client.ping()
    finally:
        daemon.stop()
    # No daemon now: a client given a start command must not start one, and its error names the endpoint.
    marker = tmp_path / "started"
    start = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    with pytest.raises(DaemonUnreachableError) as unreachable:
        connect(invitation_file, start_command=start, timeout_s=0.5)
    assert info.endpoint in str(unreachable.value) and "cannot be reached" in str(unreachable.value)
    assert not marker.exists()


def test_invite_refuses_an_endpoint_clients_cannot_dial(tmp_path):
    connection_file = tmp_path / "server" / "connection.json"
    for endpoint in ("tcp://0.0.0.0:5557", "tcp://*:5557", "tcp://127.0.0.2:0"):
        completed = daemon_command(connection_file, "invite", "-o", str(tmp_path / "x.json"), "--endpoint", endpoint)
        assert completed.returncode == 1 and "--endpoint tcp://HOST:PORT" in completed.stderr
    # Without a running daemon and without --endpoint there is nothing to dial.
    completed = daemon_command(connection_file, "invite", "-o", str(tmp_path / "x.json"))
    assert completed.returncode == 1 and "give --endpoint" in completed.stderr
    assert not (tmp_path / "x.json").exists()
    ok = daemon_command(connection_file, "invite", "-o", str(tmp_path / "x.json"), "--endpoint", "tcp://gpu-box:5557")
    assert ok.returncode == 0, ok.stderr
    assert read_connection_file(tmp_path / "x.json").invitation == "client-1"
    again = daemon_command(connection_file, "invite", "-o", str(tmp_path / "y.json"), "--endpoint", "tcp://gpu-box:5557",
                           "--name", "client-1")
    assert again.returncode == 1 and "already invited" in again.stderr


def test_the_store_is_read_again_when_it_changes_and_fails_closed(tmp_path):
    path = tmp_path / "keys" / "connection.keys.json"
    daemon_view, command_view = InvitationStore(path), InvitationStore(path)
    pair = command_view.invite("laptop")
    assert daemon_view.name_of(pair.public) == "laptop"
    assert daemon_view.server_key() == command_view.server_key()
    command_view.revoke("laptop")
    assert daemon_view.name_of(pair.public) is None
    with pytest.raises(InvitationError):
        command_view.revoke("laptop")
    with pytest.raises(InvitationError):
        command_view.invite("not a name")
    second = command_view.invite("desk")
    os.chmod(path, 0o644)  # readable by others: not trusted, so nobody is admitted from it
    assert daemon_view.name_of(second.public) is None and daemon_view.load_error
    os.chmod(path, 0o600)
    assert daemon_view.name_of(second.public) == "desk"


def test_tcp_is_refused_without_curve_on_any_address(monkeypatch, capsys):
    for endpoint in ("tcp://127.0.0.1:0", "tcp://0.0.0.0:5557", "tcp://192.0.2.1:5557"):
        with pytest.raises(InsecureEndpointError, match="without CurveZMQ"):
            require_curve(endpoint, curve_available=False)
        require_curve(endpoint, curve_available=True)
    require_curve("ipc:///run/x.sock", curve_available=False)
    # The serve command refuses before binding anything.
    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve")
    assert daemon_cli.main(["serve", "--endpoint", "tcp://192.0.2.1:5557"]) == 1
    assert "reachable from other machines" in capsys.readouterr().err


def test_endpoint_classification_and_liveness_defaults():
    assert is_loopback("ipc:///tmp/x.sock") and is_loopback("tcp://127.0.0.2:5") and is_loopback("tcp://[::1]:5")
    assert is_loopback("tcp://localhost:5")
    assert not any(is_loopback(e) for e in ("tcp://0.0.0.0:5", "tcp://*:5", "tcp://10.0.0.3:5", "tcp://gpu-box:5"))
    assert default_client_timeout_s(None) == 1.5 and default_client_timeout_s("tcp://0.0.0.0:5557") == 10.0
    keys = CurveKeys(*(zmq.curve_keypair()[0].decode() for _ in range(3)))
    local = ConnectionInfo("tcp://127.0.0.1:5", curve=keys)
    invited = invitation_info("tcp://gpu-box:5557", keys.server_public, keys.client_public, keys.client_secret,
                              "laptop", max_frame_bytes=1024, daemon_silence_s=20)
    assert daemon_silence_limit_s(local, {}) == 4.0 and daemon_silence_limit_s(invited, {}) == 20
    assert daemon_silence_limit_s(invited, {"NEURAL_STYLE_DAEMON_SILENCE_S": "42"}) == 42
    with pytest.raises(ValueError):
        invitation_info("tcp://*:5557", keys.server_public, keys.client_public, keys.client_secret, "x",
                        max_frame_bytes=1)


def test_remote_info_tells_an_invitation_from_a_local_connection_file(tmp_path):
    keys = CurveKeys(*(zmq.curve_keypair()[0].decode() for _ in range(3)))
    local, invited = tmp_path / "local.json", tmp_path / "invited.json"
    write_connection_file(ConnectionInfo("tcp://127.0.0.1:5", pid=1, curve=keys), local)
    write_connection_file(ConnectionInfo("tcp://gpu-box:5557", curve=keys, invitation="laptop"), invited)
    assert remote_info(local) is None and remote_info(tmp_path / "missing.json") is None
    assert remote_info(invited).endpoint == "tcp://gpu-box:5557"
    started = time.monotonic()
    assert probe_handshake(ConnectionInfo("tcp://127.0.0.2:9", curve=keys), timeout_s=1.0) is Handshake.NO_CONNECTION
    assert time.monotonic() - started < 5
