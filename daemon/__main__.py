"""``python -m daemon [serve|start|stop|status|run]``: run, control and use the daemon from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from .client.contract import DaemonError, DaemonUnreachableError
from .client.launch import daemon_command
from .client.zeromq import DaemonClient, connect, default_start_command
from .server.lifecycle import probe, terminate
from .wire.connection import (
    ConnectionFileError,
    ConnectionInfo,
    DaemonFiles,
    connection_path,
    prepare_directory,
    read_connection_file,
    remove_connection_file,
)
from .wire.private_files import UnsafeFileError, open_private

EXIT_ALREADY_RUNNING = 4  # serve: another daemon holds this connection file's lock


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in _INVITATION_COMMANDS:
        return _invitation_main(arguments)  # without the settings parser, which loads torch (seconds)
    from nst_engine.cli import add_settings_arguments, byte_size_argument
    from nst_engine.cli.masks import add_mask_arguments

    parser = argparse.ArgumentParser(prog="python -m daemon", description="The Neural Style daemon.")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run in the foreground (the default)")
    start = commands.add_parser("start", help="start in the background, detached; a no-op when one already runs")
    for sub in (serve, start):
        sub.add_argument("--endpoint", help="ZeroMQ endpoint (default: an ipc:// socket beside the connection file, "
                         "tcp://127.0.0.1:0 where there is no ipc); tcp://… is always served with CURVE, "
                         ":0 picks a free port")
        sub.add_argument("--weights", type=Path,
                         help="VGG19 state dict (default: $NEURAL_STYLE_WEIGHTS, else torchvision's cache)")
        sub.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
        sub.add_argument("--devices", metavar="LIST",
                         help="one worker per device, e.g. cuda:0,cuda:1 (default: every visible GPU, else the one "
                         "--device names); each job goes to the first free one. cpu,cpu is for tests: it rarely helps")
        sub.add_argument("--lazy", action="store_true", help="load the model at the first job instead of at start")
        sub.add_argument("--queue", type=int, default=4,
                         help="queued jobs beyond which submissions are refused as busy")
        sub.add_argument("--max-image-side", type=int, default=16384)
        sub.add_argument("--memory-budget", type=byte_size_argument, metavar="SIZE",
                         help="memory a job may use, e.g. 6GiB (default: what the device has free); "
                         "larger jobs run in tiles")
        sub.add_argument("--client-timeout", type=float, metavar="SECONDS",
                         help="cancel a job whose client has been silent this long (default 1.5 on loopback and ipc, "
                         "10 on an address other machines reach: a network has jitter)")
        sub.add_argument("--test-faults", action="store_true", help=argparse.SUPPRESS)
        sub.add_argument("-v", "--verbose", action="store_true")
    commands.add_parser("stop", help="stop the running daemon")
    commands.add_parser("status", help="show the daemon's state")
    _add_invitation_commands(commands)
    run = commands.add_parser("run", help="stylise files through the daemon")
    run.add_argument("content", type=Path)
    run.add_argument("styles", nargs="+", type=Path, metavar="style")
    run.add_argument("-o", "--output", type=Path, required=True)
    run.add_argument("--bits", type=int, choices=(8, 16))
    run.add_argument("-q", "--quiet", action="store_true")
    add_settings_arguments(run)
    add_mask_arguments(run)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        if args.command in (None, "serve"):
            return _serve(args if args.command else serve.parse_args([]))
        if args.command == "start":
            return _start(argv[argv.index("start") + 1:])
        if args.command == "stop":
            return _stop()
        if args.command == "status":
            return _status()
        if args.command in ("invite", "revoke", "clients"):
            return _invitation_command(args)
        return _run(args)
    except (DaemonError, ConnectionFileError, UnsafeFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _refuse_for_remote(path: Path, command: str) -> bool:
    """True (with the error printed) when ``path`` is an invitation to a remote daemon: start, serve and
    stop are for the daemon's own machine, and would overwrite or remove that file."""
    from .client.remote import remote_info

    if (info := remote_info(path)) is None:
        return False
    print(f"error: {path} is an invitation to the daemon at {info.endpoint}: {command} it on that machine "
          f"(unset NEURAL_STYLE_CONNECTION to {command} a local one).", file=sys.stderr)
    return True


def _serve(args: argparse.Namespace) -> int:
    if _refuse_for_remote(connection_path(), "serve"):
        return 1
    import zmq

    from .server.endpoints import InsecureEndpointError, default_client_timeout_s, require_curve
    from .server.service import AlreadyRunningError, DaemonConfig, DaemonService, EndpointError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.endpoint:
        try:
            require_curve(args.endpoint, curve_available=zmq.has("curve"))
        except InsecureEndpointError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    try:
        devices = _devices(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    config = DaemonConfig(endpoint=args.endpoint, connection_file=connection_path(), weights=args.weights,
                          device=args.device, devices=devices, lazy=args.lazy, queue_capacity=args.queue,
                          max_image_side=args.max_image_side, memory_budget=args.memory_budget,
                          client_timeout_s=args.client_timeout or default_client_timeout_s(args.endpoint),
                          test_faults=args.test_faults)
    try:
        DaemonService(config).serve()
    except AlreadyRunningError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except (EndpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _devices(args: argparse.Namespace) -> list[str | None]:
    import torch

    from .server.devices import resolve_devices

    return resolve_devices(args.devices, args.device, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _live_daemon(path: Path) -> DaemonClient | None:
    """A client of the daemon the connection file names, if it answers; UnsafeFileError for a file that is
    not private."""
    try:
        info = read_connection_file(path)
    except ConnectionFileError:
        return None
    try:
        client = DaemonClient(info, timeout_s=2.0, retries=0)
    except DaemonUnreachableError:
        return None
    try:
        client.ping()
    except DaemonUnreachableError:
        client.close()
        return None
    return client


def _start(serve_arguments: list[str]) -> int:
    """Start ``serve`` with the same arguments (start takes serve's), detached."""
    if _refuse_for_remote(connection_path(), "start"):
        return 1
    files = DaemonFiles.beside(connection_path())
    if (client := _live_daemon(files.connection)) is not None:
        print(f"The daemon is already running (pid {client.info.pid}, {client.info.endpoint}).")
        client.close()
        return 0
    prepare_directory(files.connection)
    command = daemon_command("serve", *serve_arguments)
    with os.fdopen(open_private(files.log, os.O_WRONLY | os.O_APPEND), "ab") as log_file:
        # Its own session and process group: GIMP killing the plug-in's group does not reach it.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if process.returncode == EXIT_ALREADY_RUNNING:
                return _await_running_daemon(files, deadline)
            print(f"error: the daemon exited at start (status {process.returncode}); see {files.log}", file=sys.stderr)
            return 1
        if (client := _live_daemon(files.connection)) is not None:
            client.close()
            if client.info.pid == process.pid:
                print(f"Daemon started (pid {process.pid}); log: {files.log}")
                return 0
        time.sleep(0.1)
    print(f"error: the daemon did not come up within 60 s; see {files.log}", file=sys.stderr)
    return 1


def _await_running_daemon(files: DaemonFiles, deadline: float) -> int:
    """Another daemon holds the lock: one that a concurrent start is bringing up, or one whose connection
    file was removed and that writes it again within a second.  Wait for it to answer."""
    while time.monotonic() < deadline:
        if (client := _live_daemon(files.connection)) is not None:
            print(f"The daemon is already running (pid {client.info.pid}, {client.info.endpoint}).")
            client.close()
            return 0
        time.sleep(0.1)
    owner = probe(files.lock).owner
    who = f"pid {owner.pid}" if owner is not None else "another process"
    print(f"error: a daemon ({who}) holds {files.lock} but does not answer; stop it with: python -m daemon stop",
          file=sys.stderr)
    return 1


def _stop() -> int:
    """Ask the daemon to shut down; signal it only when it does not answer and the lock shows that the
    process is that daemon (pid and start time); otherwise signal nothing and remove stale files."""
    if _refuse_for_remote(connection_path(), "stop"):
        return 1
    files = DaemonFiles.beside(connection_path())
    info: ConnectionInfo | None = None
    try:
        info = read_connection_file(files.connection)
    except ConnectionFileError:
        pass
    asked = False
    if info is not None:
        try:
            with DaemonClient(info, timeout_s=2.0, retries=0) as client:
                client.shutdown()
            asked = True
        except DaemonError:
            pass
    state = probe(files.lock)
    if not state.held and not asked:
        if info is None:
            print("No daemon is running.")
            return 0
        _remove_stale_files(files, info)
        print(f"No daemon is running; removed its stale connection file {files.connection}.")
        return 0
    if state.held and not asked:
        if state.owner is None or not terminate(state.owner):
            print(f"error: a daemon holds {files.lock} but does not answer, and its process cannot be identified; "
                  "nothing was signalled", file=sys.stderr)
            return 1
    deadline = time.monotonic() + 15
    while probe(files.lock).held:
        if time.monotonic() > deadline:
            print(f"error: the daemon (pid {state.owner.pid if state.owner else '?'}) did not stop", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print("Daemon stopped.")
    return 0


def _remove_stale_files(files: DaemonFiles, info: ConnectionInfo) -> None:
    """The connection file, and the ipc socket of a daemon that died without removing it."""
    remove_connection_file(files.connection, pid=info.pid)
    if info.endpoint.startswith("ipc://"):
        socket = Path(info.endpoint.removeprefix("ipc://"))
        try:
            found = os.lstat(socket)
            if stat.S_ISSOCK(found.st_mode) and found.st_uid == getattr(os, "geteuid", lambda: found.st_uid)():
                socket.unlink()
                if socket.parent.name.startswith("neural-style-") and not any(socket.parent.iterdir()):
                    socket.parent.rmdir()
        except OSError:
            pass


def _status() -> int:
    client = _live_daemon(connection_path())
    if client is None:
        print("No daemon is running.")
        return 3
    with client:
        print(json.dumps(client.status().to_wire(), indent=2))
    return 0


_INVITATION_COMMANDS = ("invite", "revoke", "clients")


def _invitation_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon")
    _add_invitation_commands(parser.add_subparsers(dest="command"))
    try:
        return _invitation_command(parser.parse_args(argv))
    except (ConnectionFileError, UnsafeFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _add_invitation_commands(commands: argparse._SubParsersAction) -> None:
    invite = commands.add_parser("invite", help="issue a client key and write its connection file, for another machine")
    invite.add_argument("-o", "--output", type=Path, required=True, help="the client connection file to write (0600)")
    invite.add_argument("--name", help="the client's name, for revoke and clients (default: client-N)")
    invite.add_argument("--endpoint", help="tcp://HOST:PORT as the client dials it (default: the running daemon's "
                        "endpoint, unless it listens on every interface)")
    invite.add_argument("--daemon-silence", type=float, metavar="SECONDS",
                        help="how long the client waits for word from the daemon during a job (default 15)")
    revoke = commands.add_parser("revoke", help="withdraw an invitation: that key is refused from its next connection")
    revoke.add_argument("name")
    commands.add_parser("clients", help="list the invited clients")


def _invitation_command(args: argparse.Namespace) -> int:
    from .server.endpoints import REMOTE_DAEMON_SILENCE_S, invitation_info
    from .server.invitations import InvitationError, InvitationStore, keys_path
    from .wire.limits import TCP_MAX_FRAME_BYTES
    from .wire.private_files import write_private_file

    path = connection_path()
    store = InvitationStore(keys_path(path))
    try:
        if args.command == "clients":
            clients = store.clients()
            for client in clients:
                issued = time.strftime("%Y-%m-%d %H:%M", time.localtime(client.issued_at))
                print(f"{client.name}\tissued {issued}\tkey {client.public[:8]}…")
            if not clients:
                print(f"No client is invited (keys in {store.path}).")
            return 0
        if args.command == "revoke":
            store.revoke(args.name)
            print(f"Revoked {args.name}: a running daemon reads {store.path} again at each handshake and message, "
                  "so its key is refused from its next connection, and a connection it has open is cut at its next "
                  "message (its jobs cancelled).")
            return 0
        endpoint = args.endpoint or _running_endpoint(path)
        if args.output.exists():
            raise InvitationError(f"{args.output} exists; choose another file or remove it.")
        taken = {client.name for client in store.clients()}
        name = args.name or next(f"client-{n}" for n in range(1, len(taken) + 2) if f"client-{n}" not in taken)
        # Checked before a key is issued: a wildcard or :0 endpoint is refused here.
        invitation_info(endpoint, "0" * 40, "0" * 40, "0" * 40, name, max_frame_bytes=TCP_MAX_FRAME_BYTES)
        server = store.server_key()
        pair = store.invite(name)
        info = invitation_info(endpoint, server.public, pair.public, pair.secret, name,
                               max_frame_bytes=TCP_MAX_FRAME_BYTES,
                               daemon_silence_s=args.daemon_silence or REMOTE_DAEMON_SILENCE_S)
        write_private_file(args.output, json.dumps(info.to_json(), indent=2).encode())
    except (InvitationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Invited {name}: {args.output} (mode 0600) reaches {endpoint}. Copy it to the client's machine "
          "privately, then use it there with NEURAL_STYLE_CONNECTION=FILE or python3 install.py --connect FILE.")
    return 0


def _running_endpoint(path: Path) -> str:
    from .server.invitations import InvitationError

    try:
        endpoint = read_connection_file(path).endpoint
    except ConnectionFileError:
        raise InvitationError("No daemon is running here to take its endpoint from: give --endpoint "
                              "tcp://HOST:PORT (the address clients dial and the port the daemon serves).") from None
    if not endpoint.startswith("tcp://"):
        raise InvitationError(f"The running daemon serves {endpoint}, which other machines cannot reach: start it "
                              "with --endpoint tcp://ADDRESS:PORT (e.g. tcp://0.0.0.0:5557).")
    return endpoint


def _run(args: argparse.Namespace) -> int:
    from nst_engine.cli import init_image_path, settings_values
    from nst_engine.cli.image_files import ImageFileError, read_image, write_image
    from nst_engine.cli.masks import read_masks
    from nst_engine.cli.progress_bar import TerminalProgressBar

    from .server.images import frame_to_rgb, mask_to_frame, rgb_to_frame
    from .wire.messages import Image

    def as_wire_image(tensor) -> Image:
        return Image(*rgb_to_frame(tensor))

    def as_wire_masks(masks):
        return None if masks is None else [None if mask is None else Image(*mask_to_frame(mask)) for mask in masks]

    try:
        content = read_image(args.content)
        styles = [read_image(path) for path in args.styles]
        init_path = init_image_path(args)
        init = read_image(init_path) if init_path else None
        regions, style_masks = read_masks(args, content, styles)
    except ImageFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    bar = None if args.quiet else TerminalProgressBar()
    client = connect(start_command=default_start_command(),
                     on_wait=None if args.quiet else lambda message: print(message, file=sys.stderr))
    # On Ctrl-C the client stops heartbeating and the daemon cancels the job within two seconds.
    with client:
        try:
            result = client.stylize(
                as_wire_image(content.rgb), [as_wire_image(style.rgb) for style in styles], settings_values(args),
                init=as_wire_image(init.rgb) if init else None,
                regions=as_wire_masks(regions), style_masks=as_wire_masks(style_masks),
                on_progress=(lambda p: bar.update(p.stage, p.stages, p.width, p.height, p.iteration, p.total_iterations,
                                                  p.losses["total"], p.elapsed_s)) if bar else None,
            )
        finally:
            if bar is not None:
                bar.close()
    from nst_engine.image_ops import resize

    spec = result.image.spec
    rgb = frame_to_rgb(spec, result.image.data)

    alpha = None if content.alpha is None else resize(content.alpha[None], spec.height, spec.width)[0]
    try:
        write_image(args.output, rgb, alpha, bits=args.bits or content.bits)
    except ImageFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"Wrote {args.output} ({spec.width}×{spec.height}) in {result.elapsed_s:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
