"""A pipe bridge for a GIMP whose Python cannot load pyzmq (or msgpack).

GIMP runs plug-ins with its own Python; where no wheel fits it (GIMP's bundled Python on Windows may
refuse PyPI wheels), the plug-in starts ``python -m daemon.bridge`` with the project's own Python (the
command install.py records) and talks to it over the child's stdin and stdout.  The bridge is an
ordinary client of the daemon: it signs, heartbeats and retries as :mod:`daemon.client` does.

This module's plug-in side (:class:`BridgeClient`, :func:`connect_any`) uses the standard library only;
the bridge side imports :mod:`daemon.client` when it runs.

Pipe format, both ways: a 4-byte little-endian length, that many bytes of a JSON object, then the raw
binary frames whose byte lengths the object lists under ``"frames"``.  One job per bridge process:

- plug-in → bridge: ``{"op": "stylize", "content": spec, "styles": [spec…], "settings": {…},
  "options": {…}, "start_command": [...] | null}`` with the content and style pixels as frames;
- bridge → plug-in: any number of ``{"event": "wait", "text"}`` and ``{"event": "progress", …}``
  (a preview image as a frame), then one ``{"event": "result", "job_id", "image", "elapsed_s"}`` with
  the pixels, or one ``{"event": "error", "kind": "job" | "unreachable" | "daemon", "message", …}``.

When the plug-in's end of stdin closes (GIMP kills a plug-in whose progress is cancelled), the bridge
cancels the job and exits.  A malformed request (bad framing, sizes over the limits of
:mod:`daemon.limits`, bad JSON, specs that do not match the frames) gets one error event and exit
status 2; a job that fails gets its error event and status 1.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from .limits import MAX_IMAGE_SIDE, MAX_IMAGES, MessageCaps
from .records import (
    Buffer,
    DaemonError,
    DaemonJobError,
    DaemonUnreachableError,
    Image,
    ImageSpec,
    JobProgress,
    JobResult,
)

log = logging.getLogger(__name__)

FORCE_BRIDGE_VARIABLE = "NEURAL_STYLE_BRIDGE"  # "1": use the bridge even where pyzmq would load
_LENGTH = struct.Struct("<I")
_MAX_JSON_BYTES = 1 << 20
_CAPS = MessageCaps.for_images()
_READ_CHUNK_BYTES = 16 * 2**20  # what is allocated ahead of the data actually arriving
_SUBMIT_OPTIONS = frozenset({"output_size", "preview_every", "progress_every", "warm_start"})
EXIT_FAILED = 1  # the daemon or the job failed; the error event says why
EXIT_MALFORMED = 2  # the request itself was malformed


class MalformedRequestError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------------
# Pipe framing
# ---------------------------------------------------------------------------------------------------
def write_message(stream: BinaryIO, fields: dict[str, Any], frames: Sequence[Buffer] = ()) -> None:
    data = json.dumps({**fields, "frames": [memoryview(frame).nbytes for frame in frames]}).encode()
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.writelines(frames)
    stream.flush()


def read_message(stream: BinaryIO) -> tuple[dict[str, Any], list[bytes]] | None:
    """The next message, or None at a clean end of the stream; ValueError for anything malformed,
    including declared sizes over the limits (checked before anything of that size is read)."""
    prefix = _read_exactly(stream, _LENGTH.size, at_start=True)
    if prefix is None:
        return None
    (length,) = _LENGTH.unpack(prefix)
    if length > _MAX_JSON_BYTES:
        raise ValueError(f"bridge message header of {length} bytes is too large (limit {_MAX_JSON_BYTES})")
    try:
        fields = json.loads(_read_exactly(stream, length))
    except UnicodeDecodeError:
        raise ValueError("bridge message header is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"bridge message header is not valid JSON ({error})") from None
    sizes = fields.get("frames") if isinstance(fields, dict) else None
    if not isinstance(sizes, list) or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0
                                              for size in sizes):
        raise ValueError("bridge message without a valid frame list")
    if len(sizes) > MAX_IMAGES:
        raise ValueError(f"bridge message with {len(sizes)} frames (limit {MAX_IMAGES})")
    if max(sizes, default=0) > _CAPS.max_part_bytes or sum(sizes) > _CAPS.max_message_bytes:
        raise ValueError(f"bridge message declares frames of {sum(sizes)} bytes, over the limit of "
                         f"{_CAPS.max_part_bytes} per frame and {_CAPS.max_message_bytes} in all")
    return fields, [_read_exactly(stream, size) for size in sizes]


def _read_exactly(stream: BinaryIO, count: int, at_start: bool = False) -> bytes | None:
    chunks, remaining = [], count
    while remaining:
        chunk = stream.read(min(remaining, _READ_CHUNK_BYTES))
        if not chunk:
            if at_start and remaining == count:
                return None
            raise ValueError("the bridge pipe closed in the middle of a message")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------------
# The plug-in's side
# ---------------------------------------------------------------------------------------------------
class BridgeClient:
    """Runs jobs through a bridge process; offers the part of DaemonClient the plug-in uses."""

    transport = "bridge"

    def __init__(self, command: Sequence[str], start_command: Sequence[str] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.command = list(command)
        self.start_command = list(start_command) if start_command else None
        self.on_wait = on_wait
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stylize(self, content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None, *,
                on_progress: Callable[[JobProgress], None] | None = None,
                cancel: threading.Event | None = None, **submit_options: Any) -> JobResult:
        # ``cancel`` is accepted for DaemonClient's signature; the plug-in is killed rather than cancelled,
        # which closes the pipe, which makes the bridge cancel the job.
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as error:
            raise DaemonUnreachableError(
                f"The bridge to the daemon could not be started ({error}); run python3 install.py again."
            ) from None
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {
            "op": "stylize",
            "content": content.spec.to_wire(),
            "styles": [style.spec.to_wire() for style in styles],
            "settings": dict(settings or {}),
            "options": submit_options,
            "start_command": self.start_command,
        }
        try:
            write_message(self.process.stdin, request, [content.data, *(style.data for style in styles)])
            while (message := read_message(self.process.stdout)) is not None:
                result = self._handle(*message, on_progress)
                if result is not None:
                    return result
        except (OSError, ValueError) as error:
            log.info("Bridge pipe failed: %s", error)
        code = self.process.poll()
        raise DaemonUnreachableError(
            f"The bridge to the daemon stopped without a result (exit status {code}); "
            "see GIMP's error console or run: python -m daemon status"
        )

    def _handle(self, fields: dict[str, Any], frames: list[bytes],
                on_progress: Callable[[JobProgress], None] | None) -> JobResult | None:
        event = fields.get("event")
        if event == "wait" and self.on_wait is not None:
            self.on_wait(str(fields.get("text", "")))
        elif event == "progress" and on_progress is not None:
            preview = Image(ImageSpec.from_wire(fields["image"]), frames[0]) if frames else None
            on_progress(JobProgress.from_body(fields["body"], preview))
        elif event == "result":
            return JobResult(fields["job_id"], Image(ImageSpec.from_wire(fields["image"]), frames[0]), fields["elapsed_s"])
        elif event == "error":
            message = str(fields.get("message", "The daemon reported an error."))
            if fields.get("kind") == "job":
                raise DaemonJobError(str(fields.get("code")), message, fields.get("largest_size"))
            if fields.get("kind") == "unreachable":
                raise DaemonUnreachableError(message)
            raise DaemonError(message)
        return None


def connect_any(*, start_command: Sequence[str] | None, bridge_command: Sequence[str] | None,
                on_wait: Callable[[str], None] | None = None) -> Any:
    """A DaemonClient where pyzmq and msgpack load (and the bridge is not forced with
    NEURAL_STYLE_BRIDGE=1), else a BridgeClient running ``bridge_command``."""
    if os.environ.get(FORCE_BRIDGE_VARIABLE) != "1":
        try:
            from .client import connect
        except ImportError as missing:
            log.info("Direct connection unavailable (%s); using the bridge", missing)
        else:
            return connect(start_command=start_command, on_wait=on_wait)
    if not bridge_command:
        raise DaemonUnreachableError(
            "This GIMP's Python cannot load pyzmq and no bridge command is recorded; run python3 install.py again."
        )
    return BridgeClient(bridge_command, start_command, on_wait)


# ---------------------------------------------------------------------------------------------------
# The bridge process
# ---------------------------------------------------------------------------------------------------
def serve(requests: BinaryIO, events: BinaryIO) -> int:
    """Run the one job read from ``requests``, writing its events to ``events``; the exit status."""
    from .client import connect

    try:
        message = read_message(requests)
        if message is None:
            return 0
        request = _parse_request(*message)
    except ValueError as error:
        _report_error(events, {"kind": "daemon", "message": f"The bridge received a malformed request ({error})."})
        return EXIT_MALFORMED

    cancel = threading.Event()

    def watch_for_close() -> None:
        # The raw descriptor, not the buffered stream: a thread blocked inside a buffered read would
        # hold its lock when the interpreter shuts down.
        try:
            while os.read(requests.fileno(), 4096):
                pass
        except (OSError, ValueError):
            pass
        cancel.set()  # the plug-in is gone

    threading.Thread(target=watch_for_close, daemon=True).start()

    def on_progress(progress: JobProgress) -> None:
        preview = progress.preview
        extra = {"image": preview.spec.to_wire()} if preview is not None else {}
        write_message(events, {"event": "progress", "body": progress.to_body(), **extra}, [preview.data] if preview else [])

    try:
        with connect(start_command=request.start_command,
                     on_wait=lambda text: write_message(events, {"event": "wait", "text": text})) as client:
            result = client.stylize(request.content, request.styles, request.settings, on_progress=on_progress,
                                    cancel=cancel, **request.options)
        write_message(events, {"event": "result", "job_id": result.job_id, "image": result.image.spec.to_wire(),
                               "elapsed_s": result.elapsed_s}, [result.image.data])
        return 0
    except DaemonJobError as error:
        _report_error(events, {"kind": "job", "code": error.code, "message": str(error),
                               "largest_size": error.largest_size})
    except DaemonUnreachableError as error:
        _report_error(events, {"kind": "unreachable", "message": str(error)})
    except DaemonError as error:
        _report_error(events, {"kind": "daemon", "message": str(error)})
    return EXIT_FAILED


@dataclass(frozen=True)
class _Request:
    content: Image
    styles: list[Image]
    settings: dict[str, Any]
    options: dict[str, Any]
    start_command: list[str] | None


def _parse_request(fields: dict[str, Any], frames: list[bytes]) -> _Request:
    """The stylize request, checked: MalformedRequestError (a ValueError) names what is wrong."""
    if fields.get("op") != "stylize":
        raise MalformedRequestError(f"unknown op {fields.get('op')!r}")
    styles = fields.get("styles")
    if not isinstance(styles, list) or not 1 <= len(styles) <= MAX_IMAGES - 2:
        raise MalformedRequestError(f"styles must list 1 to {MAX_IMAGES - 2} image specs")
    if len(frames) != 1 + len(styles):
        raise MalformedRequestError(f"{1 + len(styles)} images described but {len(frames)} frames sent")
    images = [_image(spec, frame, where) for spec, frame, where in
              zip([fields.get("content"), *styles], frames, ["content", *(f"styles[{i}]" for i in range(len(styles)))])]
    settings = fields.get("settings") or {}
    options = dict(fields.get("options") or {})
    start_command = fields.get("start_command")
    if not isinstance(settings, dict):
        raise MalformedRequestError("settings must be an object")
    if not set(options) <= _SUBMIT_OPTIONS:
        raise MalformedRequestError(f"unknown option {sorted(set(options) - _SUBMIT_OPTIONS)[0]!r}")
    if options.get("output_size") is not None:
        size = options["output_size"]
        if not isinstance(size, list) or len(size) != 2 or not all(isinstance(side, int) for side in size):
            raise MalformedRequestError("output_size must be [width, height]")
        options["output_size"] = tuple(size)
    if start_command is not None and (not isinstance(start_command, list)
                                      or not all(isinstance(part, str) for part in start_command)):
        raise MalformedRequestError("start_command must be a list of strings")
    return _Request(images[0], images[1:], settings, options, start_command)


def _image(spec: object, frame: bytes, where: str) -> Image:
    try:
        image_spec = ImageSpec.from_wire(spec)
    except (KeyError, TypeError, ValueError):
        raise MalformedRequestError(f"{where} is not an image spec (width, height, channels, dtype)") from None
    if not (1 <= image_spec.width <= MAX_IMAGE_SIDE and 1 <= image_spec.height <= MAX_IMAGE_SIDE
            and 1 <= image_spec.channels <= 4):
        raise MalformedRequestError(f"{where} has an impossible size or channel count")
    if image_spec.nbytes != len(frame):
        raise MalformedRequestError(f"{where} needs {image_spec.nbytes} bytes but its frame has {len(frame)}")
    return Image(image_spec, frame)


def _report_error(events: BinaryIO, fields: dict[str, Any]) -> None:
    try:
        write_message(events, {"event": "error", **fields})
    except OSError:  # the plug-in has gone; nobody is left to tell
        log.info("Plug-in gone before the error could be reported: %s", fields.get("message"))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="neural-style bridge: %(message)s", stream=sys.stderr)
    requests, events = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed by accident may corrupt the pipe
    try:
        return serve(requests, events)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
