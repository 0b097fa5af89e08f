"""A pipe bridge for a GIMP whose Python cannot load pyzmq (or msgpack).

GIMP runs plug-ins with its own Python; where no wheel fits it (GIMP's bundled Python on Windows may
refuse PyPI wheels), the plug-in starts ``python -m daemon.client.bridge`` with the project's own Python (the
command install.py records) and talks to it over the child's stdin and stdout.  The bridge is an
ordinary client of the daemon: it signs, heartbeats and retries as :mod:`daemon.client.zeromq` does.

This module's plug-in side (:class:`BridgeClient`, :func:`connect_any`) uses the standard library only;
the bridge side imports :mod:`daemon.client.zeromq` when it runs.

Pipe format, both ways: a 4-byte little-endian length, that many bytes of a JSON object, then the raw
binary frames whose byte lengths the object lists under ``"frames"``.  One request per bridge process:

- plug-in → bridge: ``{"op": "stylize", "content": spec, "styles": [spec…], "regions": [spec | null…] | null,
  "style_masks": [spec | null…] | null, "settings": {…}, "options": {…}, "start_command": [...] | null}``
  with the content, style, region and style-mask pixels as frames in that order (masks that are null
  have none); later, optionally, ``{"op": "cancel"}``, which cancels the job as DaemonClient.cancel does;
  or ``{"op": "status", "start_command"}``, or ``{"op": "estimate", "estimate": {…estimate body…},
  "start_command"}``;
- bridge → plug-in, for stylize: any number of ``{"event": "wait", "text"}``, then ``{"event": "accepted",
  "job_id"}``, any number of ``{"event": "progress", "body": {…progress body…}}`` (a preview image as a
  frame, its spec under ``"image"``), then one ``{"event": "result", …result body…}`` with the pixels;
  for status and estimate one ``{"event": "status" | "estimate", "body": {…reply body…}}``; in place of
  any of the last, one ``{"event": "error", "kind": "job" | "unreachable" | "daemon", "message", …}``,
  a job's carrying the daemon's error body (``code``, ``largest_size``…).

The bodies are those of :mod:`daemon.wire.messages`, checked by its records on both sides.
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
from typing import Any, BinaryIO, TypeVar

from .contract import StyleClient
from ..wire.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_IMAGES, MAX_STYLES, MessageCaps
from ..wire.messages import (
    Buffer,
    Error,
    Estimate,
    EstimateReply,
    Image,
    ImageSpec,
    JobProgress,
    ProtocolError,
    Result,
    StatusReply,
    invalid,
)
from .contract import DaemonError, DaemonJobError, DaemonUnreachableError, JobResult

log = logging.getLogger(__name__)
_R = TypeVar("_R")

FORCE_BRIDGE_VARIABLE = "NEURAL_STYLE_BRIDGE"  # "1": use the bridge even where pyzmq would load
_LENGTH = struct.Struct("<I")
_MAX_JSON_BYTES = 1 << 20
_CAPS = MessageCaps.for_images()
_READ_CHUNK_BYTES = 16 * 2**20  # what is allocated ahead of the data actually arriving
_SUBMIT_OPTIONS = frozenset({"output_size", "preview_every", "progress_every", "warm_start", "result_dtype",
                             "preview_max_side"})
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
    """Runs requests through a bridge process, one process per request; the same calls, with the same
    meaning, as DaemonClient (:class:`daemon.client.contract.StyleClient`)."""

    transport = "bridge"

    def __init__(self, command: Sequence[str], start_command: Sequence[str] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.command = list(command)
        self.start_command = list(start_command) if start_command else None
        self.on_wait = on_wait
        self.process: subprocess.Popen[bytes] | None = None
        self._job_id: str | None = None
        self._image_bytes = 0  # the pixel bytes of the job's images, sent down the pipe as the bridge sends them on

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        process, self.process, self._job_id = self.process, None, None
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

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None, *,
               regions: Sequence[Image | None] | None = None, style_masks: Sequence[Image | None] | None = None,
               **submit_options: Any) -> str:
        """Start a bridge for the job and return its id once the daemon accepted it; follow with :meth:`wait`."""
        frames: list[Buffer] = [content.data, *(style.data for style in styles)]
        request: dict[str, Any] = {
            "op": "stylize",
            "content": content.spec.to_wire(),
            "styles": [style.spec.to_wire() for style in styles],
            "settings": dict(settings or {}),
            "options": submit_options,
            "start_command": self.start_command,
        }
        for name, masks in (("regions", regions), ("style_masks", style_masks)):
            if masks is not None:
                request[name] = [None if mask is None else mask.spec.to_wire() for mask in masks]
                frames += [mask.data for mask in masks if mask is not None]
        self._start(request, frames)
        while (event := self._next()) is not None:
            fields, _ = event
            if fields.get("event") == "accepted":
                self._job_id = str(fields.get("job_id"))
                self._image_bytes = sum(memoryview(frame).nbytes for frame in frames)
                return self._job_id
        raise self._stopped()

    def wait(self, job_id: str, *, on_progress: Callable[[JobProgress], None] | None = None,
             cancel: threading.Event | None = None) -> JobResult:
        """The job's progress until its result.  ``cancel``: set, the job is cancelled as by :meth:`cancel`
        (GIMP usually kills the plug-in instead, which closes the pipe, which cancels the job too)."""
        if self.process is None or job_id != self._job_id:
            raise DaemonJobError("invalid_request", f"no job {job_id!r} runs through this bridge")
        if cancel is not None:
            threading.Thread(target=self._cancel_when_set, args=(cancel,), daemon=True).start()
        while (event := self._next()) is not None:
            fields, frames = event
            if fields.get("event") == "progress" and on_progress is not None:
                preview = None
                if frames:
                    preview = Image(_spec(fields.get("image")), frames[0])
                on_progress(_record(JobProgress, fields.get("body"), preview))
            elif fields.get("event") == "result":
                result = _record(Result, fields)
                if len(frames) != 1 or len(frames[0]) != result.image.nbytes:
                    raise DaemonError("The bridge sent an image whose size does not match its description.")
                return JobResult(result.job_id, Image(result.image, frames[0]), result.elapsed_s, self._image_bytes)
        raise self._stopped()

    def cancel(self, job_id: str) -> None:
        """Ask the daemon to stop the job; :meth:`wait` then raises DaemonJobError with code ``cancelled``."""
        if self.process is not None and self.process.stdin is not None and job_id == self._job_id:
            try:
                write_message(self.process.stdin, {"op": "cancel"})
            except (OSError, ValueError):
                pass  # the bridge has gone: its job is cancelled as its pipe closed

    def stylize(self, content: Image, styles: Sequence[Image], settings: dict[str, Any] | None = None, *,
                on_progress: Callable[[JobProgress], None] | None = None,
                cancel: threading.Event | None = None, **submit_options: Any) -> JobResult:
        job_id = self.submit(content, styles, settings, **submit_options)
        return self.wait(job_id, on_progress=on_progress, cancel=cancel)

    def status(self) -> StatusReply:
        return _record(StatusReply, self._one_reply({"op": "status"}, "status"))

    def estimate(self, settings: dict[str, Any] | None, width: int, height: int, *,
                 style_sizes: Sequence[tuple[int, int]] = ()) -> EstimateReply:
        request = Estimate(width, height, dict(settings or {}), tuple((int(w), int(h)) for w, h in style_sizes))
        return _record(EstimateReply, self._one_reply({"op": "estimate", "estimate": request.to_wire()}, "estimate"))

    # -- the pipe ---------------------------------------------------------------------------------
    def _one_reply(self, request: dict[str, Any], event: str) -> Any:
        self.close()
        self._start({**request, "start_command": self.start_command}, [])
        try:
            while (message := self._next()) is not None:
                if message[0].get("event") == event:
                    return message[0].get("body")
            raise self._stopped()
        finally:
            self.close()

    def _start(self, request: dict[str, Any], frames: Sequence[Buffer]) -> None:
        self.close()
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as error:
            raise DaemonUnreachableError(
                f"The bridge to the daemon could not be started ({error}); run python3 install.py again."
            ) from None
        assert self.process.stdin is not None
        try:
            write_message(self.process.stdin, request, frames)
        except OSError as error:
            log.info("Bridge pipe failed: %s", error)

    def _next(self) -> tuple[dict[str, Any], list[bytes]] | None:
        """The next event other than wait (those go to on_wait); errors raised; None when the pipe ends."""
        assert self.process is not None and self.process.stdout is not None
        while True:
            try:
                message = read_message(self.process.stdout)
            except (OSError, ValueError) as error:
                log.info("Bridge pipe failed: %s", error)
                return None
            if message is None:
                return None
            fields = message[0]
            if fields.get("event") == "wait":
                if self.on_wait is not None:
                    self.on_wait(str(fields.get("text", "")))
            elif fields.get("event") == "error":
                raise _bridge_error(fields)
            else:
                return message

    def _cancel_when_set(self, cancel: threading.Event) -> None:
        while self.process is not None and self._job_id is not None:
            if cancel.wait(0.1):
                if self._job_id is not None:
                    self.cancel(self._job_id)
                return

    def _stopped(self) -> DaemonUnreachableError:
        code = self.process.poll() if self.process is not None else None
        return DaemonUnreachableError(
            f"The bridge to the daemon stopped without a result (exit status {code}); "
            "see GIMP's error console or run: python -m daemon status"
        )


def _bridge_error(fields: dict[str, Any]) -> DaemonError:
    message = str(fields.get("message", "The daemon reported an error."))
    if fields.get("kind") == "job":
        error = Error.from_wire(fields)
        return DaemonJobError(error.code.value, error.message, error.largest_size)
    if fields.get("kind") == "unreachable":
        return DaemonUnreachableError(message)
    return DaemonError(message)


def _record(record: type[_R], body: object, *extra: Any) -> _R:
    try:
        if not isinstance(body, dict):
            raise invalid("the body is not a map")
        return record.from_wire(body, *extra)  # type: ignore[attr-defined]
    except ProtocolError as error:
        raise DaemonError(f"The bridge sent a malformed message: {error}") from None


def _spec(fields: object) -> ImageSpec:
    try:
        return ImageSpec.from_wire(fields)
    except ProtocolError as error:
        raise DaemonError(f"The bridge sent a malformed image: {error}") from None


def connect_any(*, start_command: Sequence[str] | None, bridge_command: Sequence[str] | None,
                on_wait: Callable[[str], None] | None = None) -> StyleClient:
    """A DaemonClient where pyzmq and msgpack load (and the bridge is not forced with
    NEURAL_STYLE_BRIDGE=1), else a BridgeClient running ``bridge_command``."""
    if os.environ.get(FORCE_BRIDGE_VARIABLE) != "1":
        try:
            from .zeromq import connect
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
    """Answer the one request read from ``requests``, writing its events to ``events``; the exit status."""
    from .zeromq import connect

    try:
        message = read_message(requests)
        if message is None:
            return 0
        request = _parse_request(*message)
    except ValueError as error:
        _report_error(events, {"kind": "daemon", "message": f"The bridge received a malformed request ({error})."})
        return EXIT_MALFORMED

    cancel = threading.Event()
    if isinstance(request, _Stylize):
        threading.Thread(target=_watch_for_cancel, args=(requests, cancel), daemon=True).start()

    def on_progress(progress: JobProgress) -> None:
        preview = progress.preview
        extra = {"image": preview.spec.to_wire()} if preview is not None else {}
        write_message(events, {"event": "progress", "body": progress.to_wire(), **extra}, [preview.data] if preview else [])

    try:
        with connect(start_command=request.start_command,
                     on_wait=lambda text: write_message(events, {"event": "wait", "text": text})) as client:
            if isinstance(request, _Estimate):
                reply = client.estimate(request.estimate.settings, request.estimate.width, request.estimate.height,
                                        style_sizes=request.estimate.style_sizes)
                write_message(events, {"event": "estimate", "body": reply.to_wire()})
                return 0
            if isinstance(request, _Status):
                write_message(events, {"event": "status", "body": client.status().to_wire()})
                return 0
            job_id = client.submit(request.content, request.styles, request.settings, regions=request.regions,
                                   style_masks=request.style_masks, **request.options)
            write_message(events, {"event": "accepted", "job_id": job_id})
            result = client.wait(job_id, on_progress=on_progress, cancel=cancel)
        write_message(events, {"event": "result", **Result(result.job_id, result.image.spec, result.elapsed_s).to_wire()},
                      [result.image.data])
        return 0
    except DaemonJobError as error:
        _report_error(events, {"kind": "job", "code": error.code, "message": str(error),
                               "largest_size": error.largest_size})
    except DaemonUnreachableError as error:
        _report_error(events, {"kind": "unreachable", "message": str(error)})
    except DaemonError as error:
        _report_error(events, {"kind": "daemon", "message": str(error)})
    return EXIT_FAILED


class _RawStream:
    """Reads the raw descriptor, not the buffered stream: a thread blocked inside a buffered read would
    hold its lock when the interpreter shuts down."""

    def __init__(self, stream: BinaryIO) -> None:
        self.descriptor = stream.fileno()

    def read(self, count: int) -> bytes:
        return os.read(self.descriptor, count)


def _watch_for_cancel(requests: BinaryIO, cancel: threading.Event) -> None:
    """Cancel the job on a ``cancel`` message, or when the plug-in's end of the pipe closes (it is gone)."""
    stream = _RawStream(requests)
    try:
        while (message := read_message(stream)) is not None:  # type: ignore[arg-type]
            if message[0].get("op") == "cancel":
                break
    except (OSError, ValueError):
        pass
    cancel.set()


@dataclass(frozen=True)
class _Stylize:
    content: Image
    styles: list[Image]
    regions: list[Image | None] | None
    style_masks: list[Image | None] | None
    settings: dict[str, Any]
    options: dict[str, Any]
    start_command: list[str] | None


@dataclass(frozen=True)
class _Status:
    start_command: list[str] | None


@dataclass(frozen=True)
class _Estimate:
    estimate: Estimate
    start_command: list[str] | None


def _parse_request(fields: dict[str, Any], frames: list[bytes]) -> _Stylize | _Status | _Estimate:
    """The request, checked: MalformedRequestError (a ValueError) names what is wrong."""
    start_command = fields.get("start_command")
    if start_command is not None and (not isinstance(start_command, list)
                                      or not all(isinstance(part, str) for part in start_command)):
        raise MalformedRequestError("start_command must be a list of strings")
    op = fields.get("op")
    if op in ("status", "estimate") and frames:
        raise MalformedRequestError(f"{op} takes no frames")
    if op == "status":
        return _Status(start_command)
    if op == "estimate":
        try:
            return _Estimate(Estimate.from_wire(fields.get("estimate") if isinstance(fields.get("estimate"), dict) else {}),
                             start_command)
        except ProtocolError as error:
            raise MalformedRequestError(str(error)) from None
    if op != "stylize":
        raise MalformedRequestError(f"unknown op {op!r}")
    styles = fields.get("styles")
    if not isinstance(styles, list) or not 1 <= len(styles) <= MAX_STYLES:
        raise MalformedRequestError(f"styles must list 1 to {MAX_STYLES} image specs")
    specs: list[tuple[object, str]] = [(fields.get("content"), "content")]
    specs += [(spec, f"styles[{index}]") for index, spec in enumerate(styles)]
    masks: dict[str, list[object] | None] = {}
    for name in ("regions", "style_masks"):
        listed = fields.get(name)
        if listed is not None and (not isinstance(listed, list) or len(listed) != len(styles)):
            raise MalformedRequestError(f"{name} must list one spec (or null) per style image")
        masks[name] = listed
        specs += [(spec, f"{name}[{index}]") for index, spec in enumerate(listed or []) if spec is not None]
    if len(frames) != len(specs):
        raise MalformedRequestError(f"{len(specs)} images described but {len(frames)} frames sent")
    images = iter([_image(spec, frame, where) for (spec, where), frame in zip(specs, frames)])
    content = next(images)
    style_images = [next(images) for _ in styles]
    mask_images = {name: None if listed is None else [None if spec is None else next(images) for spec in listed]
                   for name, listed in masks.items()}
    settings = fields.get("settings") or {}
    options = dict(fields.get("options") or {})
    if not isinstance(settings, dict):
        raise MalformedRequestError("settings must be an object")
    if not set(options) <= _SUBMIT_OPTIONS:
        raise MalformedRequestError(f"unknown option {sorted(set(options) - _SUBMIT_OPTIONS)[0]!r}")
    if options.get("output_size") is not None:
        size = options["output_size"]
        if not isinstance(size, list) or len(size) != 2 or not all(isinstance(side, int) for side in size):
            raise MalformedRequestError("output_size must be [width, height]")
        options["output_size"] = tuple(size)
    return _Stylize(content, style_images, mask_images["regions"], mask_images["style_masks"], settings, options,
                    start_command)


def _image(spec: object, frame: bytes, where: str) -> Image:
    try:
        image_spec = ImageSpec.from_wire(spec, where, MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS)
    except ProtocolError as error:
        raise MalformedRequestError(f"{where} is not an image spec ({error})") from None
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
