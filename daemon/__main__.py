"""``python -m daemon [serve|start|stop|status|run]``: run, control and use the daemon from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .client import DaemonClient, DaemonError, DaemonUnreachableError, connect
from .connection import ConnectionFileError, connection_path, process_alive, read_connection_file, runtime_dir


def main(argv: list[str] | None = None) -> int:
    from nst_engine.cli import add_settings_arguments, byte_size_argument

    parser = argparse.ArgumentParser(prog="python -m daemon", description="The Neural Style daemon.")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run in the foreground (the default)")
    start = commands.add_parser("start", help="start in the background, detached; a no-op when one already runs")
    for sub in (serve, start):
        sub.add_argument("--endpoint", default="tcp://127.0.0.1:0", help="ZeroMQ endpoint; tcp://127.0.0.1:0 picks a free port, ipc:///path is also possible")
        sub.add_argument("--weights", type=Path, help="VGG19 state dict (default: $NEURAL_STYLE_WEIGHTS, else torchvision's cache)")
        sub.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
        sub.add_argument("--lazy", action="store_true", help="load the model at the first job instead of at start")
        sub.add_argument("--queue", type=int, default=4, help="queued jobs beyond which submissions are refused as busy")
        sub.add_argument("--max-image-side", type=int, default=16384)
        sub.add_argument("--memory-budget", type=byte_size_argument, metavar="SIZE",
                         help="memory a job may use, e.g. 6GiB (default: what the device has free); larger jobs run in tiles")
        sub.add_argument("--test-faults", action="store_true", help=argparse.SUPPRESS)
        sub.add_argument("-v", "--verbose", action="store_true")
    commands.add_parser("stop", help="stop the running daemon")
    commands.add_parser("status", help="show the daemon's state")
    run = commands.add_parser("run", help="stylise files through the daemon")
    run.add_argument("content", type=Path)
    run.add_argument("styles", nargs="+", type=Path, metavar="style")
    run.add_argument("-o", "--output", type=Path, required=True)
    run.add_argument("--bits", type=int, choices=(8, 16))
    run.add_argument("-q", "--quiet", action="store_true")
    add_settings_arguments(run)
    args = parser.parse_args(argv)
    try:
        if args.command in (None, "serve"):
            return _serve(args if args.command else serve.parse_args([]))
        if args.command == "start":
            return _start(args)
        if args.command == "stop":
            return _stop()
        if args.command == "status":
            return _status()
        return _run(args)
    except (DaemonError, ConnectionFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    from .service import AlreadyRunningError, DaemonConfig, DaemonService

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DaemonConfig(endpoint=args.endpoint, connection_file=connection_path(), weights=args.weights,
                          device=args.device, lazy=args.lazy, queue_capacity=args.queue,
                          max_image_side=args.max_image_side, memory_budget=args.memory_budget,
                          test_faults=args.test_faults)
    try:
        DaemonService(config).serve()
    except AlreadyRunningError as error:
        print(f"{error}", file=sys.stderr)
        return 1
    return 0


def _live_daemon() -> DaemonClient | None:
    try:
        info = read_connection_file()
    except ConnectionFileError:
        return None
    if not process_alive(info.pid):
        return None
    try:
        client = DaemonClient(info, timeout_s=2.0, retries=0)
        client.ping()
        return client
    except DaemonError:
        return None


def _start(args: argparse.Namespace) -> int:
    if (client := _live_daemon()) is not None:
        print(f"The daemon is already running (pid {client.info.pid}, {client.info.endpoint}).")
        client.close()
        return 0
    log_path = runtime_dir() / "daemon.log"
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [sys.executable, "-m", "daemon", "serve", "--endpoint", args.endpoint, "--queue", str(args.queue),
               "--max-image-side", str(args.max_image_side)]
    for flag, value in (("--weights", args.weights), ("--device", args.device), ("--memory-budget", args.memory_budget)):
        if value:
            command += [flag, str(value)]
    command += [flag for flag, on in (("--lazy", args.lazy), ("--test-faults", args.test_faults), ("-v", args.verbose)) if on]
    with open(log_path, "ab") as log_file:
        # Its own session and process group: GIMP killing the plug-in's group does not reach it.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"error: the daemon exited at start (status {process.returncode}); see {log_path}", file=sys.stderr)
            return 1
        try:
            if read_connection_file().pid == process.pid:
                client = connect()
                client.close()
                print(f"Daemon started (pid {process.pid}); log: {log_path}")
                return 0
        except (ConnectionFileError, DaemonUnreachableError):
            pass
        time.sleep(0.1)
    print(f"error: the daemon did not come up within 60 s; see {log_path}", file=sys.stderr)
    return 1


def _stop() -> int:
    try:
        info = read_connection_file()
    except ConnectionFileError:
        print("No daemon is running.")
        return 0
    try:
        with DaemonClient(info, timeout_s=2.0, retries=0) as client:
            client.shutdown()
    except DaemonError:
        if process_alive(info.pid):
            os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while process_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(info.pid):
        print(f"error: the daemon (pid {info.pid}) did not stop", file=sys.stderr)
        return 1
    print("Daemon stopped.")
    return 0


def _status() -> int:
    client = _live_daemon()
    if client is None:
        print("No daemon is running.")
        return 3
    with client:
        print(json.dumps(client.status(), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from nst_engine.cli import init_image_path, settings_values
    from nst_engine.cli.image_files import ImageFileError, read_image, write_image
    from nst_engine.cli.progress_bar import TerminalProgressBar

    from .client import Image
    from .images import frame_to_rgb, rgb_to_frame

    def as_wire_image(tensor) -> Image:
        return Image(*rgb_to_frame(tensor))

    try:
        content = read_image(args.content)
        styles = [read_image(path) for path in args.styles]
        init_path = init_image_path(args)
        init = read_image(init_path) if init_path else None
    except ImageFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    bar = None if args.quiet else TerminalProgressBar()
    client = connect(start_command=[sys.executable, "-m", "daemon", "start"],
                     on_wait=None if args.quiet else lambda message: print(message, file=sys.stderr))
    # On Ctrl-C the client stops heartbeating and the daemon cancels the job within two seconds.
    with client:
        try:
            result = client.stylize(
                as_wire_image(content.rgb), [as_wire_image(style.rgb) for style in styles], settings_values(args),
                init=as_wire_image(init.rgb) if init else None,
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
