"""``python -m daemon [serve|start|stop|status|run]``: run, control and use the daemon from a shell."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import logging.handlers
import os
import stat
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from .client.contract import DaemonError, DaemonUnreachableError
from .client.launch import daemon_command
from .client.remote import remote_info
from .client.zeromq import DaemonClient, connect, handshake
from .server.lifecycle import ProcessIdentity, check_lock_file, probe, terminate
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
_LOG_BYTES, _LOG_BACKUPS = 1 << 20, 3  # serve --log: the log and its rotated copies stay within 4 MiB
_STARTUP_ERROR_BYTES = 4096  # of serve's stderr, what start keeps to say why it could not start
log = logging.getLogger("daemon")
_INVITATION_COMMANDS = ("invite", "revoke", "clients")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    # invite, revoke and clients go without the settings parser, which loads torch (seconds)
    parser = _parser(everything=not arguments or arguments[0] not in _INVITATION_COMMANDS)
    args = parser.parse_args(arguments or ["serve"])
    try:
        # serve, start and stop are for the daemon's own machine, and would overwrite or remove an invitation
        if args.command in ("serve", "start", "stop") and (remote := remote_info(path := connection_path())):
            return _fail(f"{path} is an invitation to the daemon at {remote.endpoint}: {args.command} it on that "
                         f"machine (unset NEURAL_STYLE_CONNECTION to {args.command} a local one).")
        if args.command in _INVITATION_COMMANDS:
            return _invitation_command(args)
        if args.command == "start":
            return _start(args, arguments[arguments.index("start") + 1:])
        if args.command == "stop":
            return _stop()
        if args.command == "status":
            return _status()
        return _run(args) if args.command == "run" else _serve(args)
    except (DaemonError, ConnectionFileError, UnsafeFileError) as error:
        return _fail(error)
    except OSError as error:  # a read-only or full folder
        return _fail(f"{error.filename}: {error.strerror}" if error.filename else error)
    except KeyboardInterrupt:
        return 130


def _parser(everything: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m daemon", description="The Neural Style daemon.")
    commands = parser.add_subparsers(dest="command")
    if everything:
        for name, text in (("serve", "run in the foreground (the default)"),
                           ("start", "start in the background, detached; a no-op when one already runs")):
            _add_serve_arguments(commands.add_parser(name, help=text))
        commands.add_parser("stop", help="stop the running daemon")
        commands.add_parser("status", help="show the daemon's state")
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
    if everything:
        from nst_engine.cli import add_animation_arguments, add_settings_arguments
        from nst_engine.cli.masks import add_mask_arguments

        run = commands.add_parser("run", help="stylise files through the daemon")
        run.add_argument("content", type=Path, help="an image, or an animation: a folder of frames or an animated "
                                                    "PNG, GIF or WebP (then -o is a folder, or a file of that kind)")
        run.add_argument("styles", nargs="+", type=Path, metavar="style")
        run.add_argument("-o", "--output", type=Path, required=True)
        run.add_argument("--bits", type=int, choices=(8, 16))
        run.add_argument("-q", "--quiet", action="store_true")
        add_settings_arguments(run)
        add_animation_arguments(run)
        add_mask_arguments(run)
    return parser


def _add_serve_arguments(sub: argparse.ArgumentParser) -> None:
    from nst_engine.cli import byte_size_argument

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
    sub.add_argument("--queue", type=int, default=4, help="queued jobs beyond which submissions are refused as busy")
    sub.add_argument("--max-image-side", type=int, default=16384)
    sub.add_argument("--memory-budget", type=byte_size_argument, metavar="SIZE",
                     help="memory a job may use, e.g. 6GiB (default: what the device has free); "
                     "larger jobs run in tiles")
    sub.add_argument("--client-timeout", type=float, metavar="SECONDS",
                     help="cancel a job whose client has been silent this long (default 1.5 on loopback and ipc, "
                     "10 on an address other machines reach: a network has jitter)")
    sub.add_argument("--log", type=Path, metavar="FILE",
                     help="log to FILE, rotated at 1 MiB with 3 older ones kept (default: stderr; start logs beside "
                     "the connection file)")
    sub.add_argument("--ray", metavar="ADDRESS",
                     help="run jobs on a Ray cluster (HOST:PORT, auto or ray://…; needs python3 install.py --ray) "
                     "instead of local devices (docs/scaling.md)")
    sub.add_argument("--ray-workers", type=int, default=1, metavar="N",
                     help="Ray actors, each holding the model: one GPU each where the cluster has GPUs, else one CPU")
    sub.add_argument("--test-faults", action="store_true", help=argparse.SUPPRESS)
    sub.add_argument("-v", "--verbose", action="store_true")


def _fail(error: object, status: int = 1, *, logged: bool = False) -> int:
    """Print ``error: …`` on stderr (``logged``: also in the log, when that is a file); return the exit status."""
    if logged:
        log.error("%s", error)
    print(f"error: {error}", file=sys.stderr)
    return status


class _PrivateLog(logging.handlers.RotatingFileHandler):
    """serve's log file: private (docs/security.md), rotated, and a failed write (a full disk) kept for
    :func:`_log_to` rather than printed as a traceback."""

    failure: BaseException | None = None

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=_LOG_BYTES, backupCount=_LOG_BACKUPS, encoding="utf-8")

    def _open(self):
        return open(open_private(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8")

    def handleError(self, record: logging.LogRecord) -> None:
        self.failure = sys.exc_info()[1]


def _log_to(path: Path | None, verbose: bool) -> None:
    """Log to stderr, or to the file ``path``; OSError or UnsafeFileError when its first line cannot be written."""
    handler = logging.StreamHandler() if path is None else _PrivateLog(path)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("Starting (pid %d)", os.getpid())
    if isinstance(handler, _PrivateLog) and handler.failure is not None:
        raise handler.failure


def _serve(args: argparse.Namespace) -> int:
    import torch
    import zmq

    from .server.devices import resolve_devices
    from .server.endpoints import InsecureEndpointError, default_client_timeout_s, require_curve
    from .server.ray_pool import RayUnavailableError
    from .server.service import AlreadyRunningError, DaemonConfig, DaemonService, EndpointError

    try:
        _log_to(args.log, args.verbose)
    except (OSError, UnsafeFileError) as error:
        return _fail(f"cannot write the log {args.log} ({getattr(error, 'strerror', None) or error})")
    try:
        if args.endpoint:
            require_curve(args.endpoint, curve_available=zmq.has("curve"))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = resolve_devices(args.devices, args.device, gpus)
    except (InsecureEndpointError, ValueError) as error:
        return _fail(error)
    config = DaemonConfig(endpoint=args.endpoint, connection_file=connection_path(), weights=args.weights,
                          device=args.device, devices=devices, lazy=args.lazy, queue_capacity=args.queue,
                          max_image_side=args.max_image_side, memory_budget=args.memory_budget,
                          client_timeout_s=args.client_timeout or default_client_timeout_s(args.endpoint),
                          test_faults=args.test_faults, ray_address=args.ray, ray_workers=args.ray_workers)
    try:
        DaemonService(config).serve()
    except AlreadyRunningError as error:
        return _fail(error, EXIT_ALREADY_RUNNING)
    except (EndpointError, OSError, UnsafeFileError, RayUnavailableError) as error:
        return _fail(error, logged=args.log is not None)
    except Exception:
        if args.log is not None:  # its stderr is gone once start has returned
            log.exception("The daemon stopped on an unexpected error")
        raise
    return 0


def _live_daemon(path: Path) -> DaemonClient | None:
    """A client of the daemon the connection file names, if it answers; DaemonError for a file not private."""
    try:
        return handshake(path, timeout_s=2.0, retries=0)
    except (ConnectionFileError, DaemonUnreachableError):
        return None


def _already_running(files: DaemonFiles) -> bool:
    """True (with its pid and endpoint printed) when a daemon answers at the connection file."""
    if (client := _live_daemon(files.connection)) is None:
        return False
    with client:
        print(f"The daemon is already running (pid {client.info.pid}, {client.info.endpoint}).")
    return True


def _silent_owner(files: DaemonFiles) -> ProcessIdentity | None:
    """The daemon that holds the lock and has published its connection file, yet does not answer (stopped with
    SIGSTOP, or hung); None when it answers, or no daemon holds the lock, or its holder is still starting."""
    state = probe(files.lock)
    if not state.held or state.owner is None or not state.owner.is_running():
        return None
    try:
        if read_connection_file(files.connection).pid != state.owner.pid:
            return None
    except ConnectionFileError:
        return None
    if (client := _live_daemon(files.connection)) is not None:
        client.close()
        return None
    return state.owner


def _not_answering(owner: ProcessIdentity) -> str:
    return (f"The daemon (pid {owner.pid}) is not answering (stopped or hung): resume it with kill -CONT {owner.pid}, "
            "or end it with: python -m daemon stop")


def _start(args: argparse.Namespace, serve_arguments: list[str]) -> int:
    """Start ``serve`` with the same arguments (start takes serve's), detached, logging beside the connection file."""
    files = DaemonFiles.beside(connection_path())
    prepare_directory(files.connection)  # refuses in one line here, rather than in the daemon's log
    check_lock_file(files.lock)
    if _already_running(files):
        return 0
    if (owner := _silent_owner(files)) is not None:
        return _fail(_not_answering(owner))
    log_file = args.log or files.log
    # Its own session and process group: GIMP killing the plug-in's group does not reach it.  Its stderr is a
    # pipe, which a full disk cannot stop: it says why the daemon could not start.
    command = daemon_command("serve", *serve_arguments) + ([] if args.log else ["--log", str(log_file)])
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
    os.set_blocking(process.stderr.fileno(), False)
    said = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        said = (said + (process.stderr.read() or b""))[-_STARTUP_ERROR_BYTES:]  # read as it comes: never full
        if process.poll() is not None:
            if process.returncode == EXIT_ALREADY_RUNNING:
                return _await_running_daemon(files, deadline)
            lines = (said + (process.stderr.read() or b"")).decode(errors="replace").strip().splitlines()
            if lines:
                return _fail(f"the daemon could not start: {lines[-1].removeprefix('error: ')}")
            return _fail(f"the daemon exited at start (status {process.returncode}); see {log_file}")
        if (client := _live_daemon(files.connection)) is not None:
            client.close()
            if client.info.pid == process.pid:
                print(f"Daemon started (pid {process.pid}); log: {log_file}")
                return 0
        time.sleep(0.1)
    return _fail(f"the daemon did not come up within 60 s; see {log_file}")


def _await_running_daemon(files: DaemonFiles, deadline: float) -> int:
    """Another daemon holds the lock: one that a concurrent start is bringing up, or one whose connection
    file was removed and that writes it again within a second.  Wait for it to answer."""
    while time.monotonic() < deadline:
        if _already_running(files):
            return 0
        if (owner := _silent_owner(files)) is not None:
            return _fail(_not_answering(owner))
        time.sleep(0.1)
    owner = probe(files.lock).owner
    who = f"pid {owner.pid}" if owner is not None else "another process"
    return _fail(f"a daemon ({who}) holds {files.lock} but does not answer; stop it with: python -m daemon stop")


def _stop() -> int:
    """Ask the daemon to shut down; signal it only when it does not answer and the lock shows that the
    process is that daemon (pid and start time); otherwise signal nothing and remove stale files."""
    files = DaemonFiles.beside(connection_path())
    try:
        info: ConnectionInfo | None = read_connection_file(files.connection)
    except ConnectionFileError:
        info = None
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
        else:
            _remove_stale_files(files, info)
            print(f"No daemon is running; removed its stale connection file {files.connection}.")
        return 0
    if not asked and (state.owner is None or not terminate(state.owner)):
        return _fail(f"a daemon holds {files.lock} but does not answer, and its process cannot be identified; "
                     "nothing was signalled")
    if not asked:
        print(f"The daemon (pid {state.owner.pid}) is not answering; sent it SIGTERM.")
    deadline = time.monotonic() + 15
    while probe(files.lock).held:
        if time.monotonic() > deadline:
            pid = state.owner.pid if state.owner else "?"
            return _fail(f"the daemon (pid {pid}) did not stop within 15 s; if it is stopped (SIGSTOP), "
                         f"kill -CONT {pid} lets it act on the SIGTERM, kill -KILL {pid} ends it")
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
    files = DaemonFiles.beside(connection_path())
    if (client := _live_daemon(files.connection)) is None:
        if (owner := _silent_owner(files)) is not None:
            return _fail(_not_answering(owner))
        print("No daemon is running.")
        return 3
    with client:
        print(json.dumps(client.status().to_wire(), indent=2))
    return 0


def _invitation_command(args: argparse.Namespace) -> int:
    from .server.auth import KeyPair
    from .server.endpoints import REMOTE_DAEMON_SILENCE_S, invitation_info
    from .server.invitations import InvitationError, InvitationStore, keys_path
    from .wire.limits import TCP_MAX_FRAME_BYTES
    from .wire.private_files import write_private_file

    path = connection_path()
    store = InvitationStore(keys_path(path))
    try:
        if args.command == "clients":
            for client in (clients := store.clients()):
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
        server, pair = store.server_key(), KeyPair.generate()
        info = invitation_info(endpoint, server.public, pair.public, pair.secret, name,
                               max_frame_bytes=TCP_MAX_FRAME_BYTES,
                               daemon_silence_s=args.daemon_silence or REMOTE_DAEMON_SILENCE_S)
        # The file first: one that cannot be written leaves no admitted key behind to block the name.
        write_private_file(args.output, json.dumps(info.to_json(), indent=2).encode())
        try:
            store.invite(name, pair)
        except BaseException:
            args.output.unlink(missing_ok=True)
            raise
    except (InvitationError, ValueError, OSError) as error:
        return _fail(error)
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
    from nst_engine.cli.animation_files import is_animation

    if args.content.is_dir() or is_animation(args.content):
        return _run_sequence(args)
    from nst_engine.cli.image_files import ImageFileError, check_writable, read_image, write_image
    from nst_engine.cli.masks import read_masks
    from nst_engine.cli.progress_bar import TerminalProgressBar
    from nst_engine.image_ops import resize

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
        check_writable(args.output, args.bits or content.bits)  # before the job, not after it
    except ImageFileError as error:
        return _fail(error)
    bar = None if args.quiet else TerminalProgressBar()
    # On Ctrl-C the client stops heartbeating and the daemon cancels the job within two seconds.
    with connect(start_command=daemon_command("start"),
                 on_wait=None if args.quiet else lambda message: print(message, file=sys.stderr)) as client:
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
    spec = result.image.spec
    alpha = None if content.alpha is None else resize(content.alpha[None], spec.height, spec.width)[0]
    try:
        write_image(args.output, frame_to_rgb(spec, result.image.data), alpha, bits=args.bits or content.bits)
    except ImageFileError as error:
        return _fail(error)
    if not args.quiet:
        print(f"Wrote {args.output} ({spec.width}×{spec.height}) in {result.elapsed_s:.1f} s.")
    return 0


def _run_sequence(args: argparse.Namespace) -> int:
    """An animation through the daemon as one sequence job: a folder of frames in, each result written under
    its frame's name into the -o folder as it comes; or an animated file in, the same kind out, with its timing."""
    from nst_engine.cli import sequence_inputs, settings_values
    from nst_engine.cli.animation_files import (
        check_animation_output,
        check_output_folder,
        frame_folder,
        read_animation,
        write_animation,
    )
    from nst_engine.cli.image_files import ImageFileError, LoadedImage, check_writable, write_image
    from nst_engine.cli.progress_bar import TerminalProgressBar
    from nst_engine.errors import StyleTransferError
    from nst_engine.image_ops import resize

    from .server.images import frame_to_rgb, mask_to_frame, rgb_to_frame
    from .wire.messages import Image

    try:
        if args.content.is_dir():
            folder = frame_folder(args.content)
            check_output_folder(args.output, folder, args.bits)
            frames, names, animation, count = folder.frames(), folder.names, None, len(folder.paths)
        else:
            check_animation_output(args.output, args.bits)
            check_writable(args.output)
            animation = read_animation(args.content)
            frames, names, count = iter(animation.frames), None, len(animation.frames)
        first = next(frames)
        styles, style_masks, _ = sequence_inputs(args, first)  # checks the settings too
    except (ImageFileError, StyleTransferError) as error:
        return _fail(error)
    sent: deque[LoadedImage] = deque()  # frames sent and not yet back, for their alpha and bits

    def wire_frames() -> Iterator[Image]:
        for frame in itertools.chain([first], frames):
            sent.append(frame)
            yield Image(*rgb_to_frame(frame.rgb))

    bar = None if args.quiet else TerminalProgressBar()
    written = []
    with connect(start_command=daemon_command("start"),
                 on_wait=None if args.quiet else lambda message: print(message, file=sys.stderr)) as client:
        try:
            results = client.stylize_sequence(
                wire_frames(), count, [Image(*rgb_to_frame(style)) for style in styles], settings_values(args),
                temporal_weight=args.temporal_weight, frame_iterations=args.frame_iterations,
                style_masks=None if style_masks is None else [
                    None if mask is None else Image(*mask_to_frame(mask)) for mask in style_masks],
                on_progress=(lambda p: bar.update(p.stage, p.stages, p.width, p.height, p.iteration,
                                                  p.total_iterations, p.losses["total"], p.elapsed_s,
                                                  frame=p.frame, frames=p.frames)) if bar else None)
            for index, result in enumerate(results):
                spec, frame = result.image.spec, sent.popleft()
                rgb = frame_to_rgb(spec, result.image.data)
                alpha = None if frame.alpha is None else resize(frame.alpha[None], spec.height, spec.width)[0]
                if names is not None:
                    write_image(args.output / names[index], rgb, alpha, bits=args.bits or frame.bits)
                else:
                    written.append((rgb, alpha))
        except ImageFileError as error:
            return _fail(error)
        finally:
            if bar is not None:
                bar.close()
    try:
        if animation is not None:
            write_animation(args.output, written, animation.durations, animation.loop)
    except ImageFileError as error:
        return _fail(error)
    if not args.quiet:
        print(f"Wrote {count} frames to {args.output}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
