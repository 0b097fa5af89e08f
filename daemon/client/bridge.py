"""A pipe bridge for a GIMP whose Python cannot load pyzmq (or msgpack): GIMP's bundled Python on Windows
may refuse PyPI wheels.  The plug-in then starts ``python -m daemon.client.bridge`` with the project's own
Python (the command install.py records) and talks to it over the child's stdin and stdout (the messages are in
docs/protocol.md, "The pipe bridge").  The bridge is an ordinary client of the daemon (:mod:`daemon.client.zeromq`,
imported when it runs); the plug-in's side (:class:`BridgeClient`, :func:`connect_any`) uses the standard
library only."""

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

from ..wire.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_IMAGES, MessageCaps
from ..wire.messages import (
    Buffer,
    Estimate,
    EstimateReply,
    JobProgress,
    Preview,
    ProtocolError,
    Result,
    StatusReply,
    Submit,
    invalid,
)
from .contract import (
    DaemonError,
    DaemonJobError,
    DaemonUnreachableError,
    JobResult,
    ProgressCallback,
    StyleClient,
    parse_reply,
)

log = logging.getLogger(__name__)

FORCE_BRIDGE_VARIABLE = "NEURAL_STYLE_BRIDGE"  # "1": use the bridge even where pyzmq would load
_LENGTH = struct.Struct("<I")
_MAX_JSON_BYTES = 1 << 20
_CAPS = MessageCaps.for_images()
_READ_CHUNK_BYTES = 16 * 2**20  # what is allocated ahead of the data actually arriving
EXIT_FAILED = 1  # the daemon or the job failed; the error event says why
EXIT_MALFORMED = 2  # the request itself was malformed


# -- pipe framing -------------------------------------------------------------------------------------
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
    except RecursionError:  # the json module recurses once per nesting level
        raise ValueError("bridge message header nests too deeply") from None
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


# -- the plug-in's side -------------------------------------------------------------------------------
class BridgeClient(StyleClient):
    """Runs requests through a bridge process, one process per request."""

    transport = "bridge"

    def __init__(self, command: Sequence[str], start_command: Sequence[str] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.command = list(command)
        self.start_command = list(start_command) if start_command else None
        self.on_wait = on_wait
        self.process: subprocess.Popen[bytes] | None = None
        self._job_id: str | None = None

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
    def send_submit(self, request: Submit, frames: Sequence[Buffer]) -> str:
        """Start a bridge for the job and return its id once the daemon accepted it."""
        self._start({"op": "submit", "submit": request.to_wire()}, frames)
        self._job_id = str(self._until("accepted").get("job_id"))
        return self._job_id

    def _wait(self, job_id: str, on_progress: ProgressCallback | None, cancel: threading.Event | None) -> JobResult:
        """``cancel`` set cancels the job as :meth:`cancel` does (GIMP usually kills the plug-in instead, which
        closes the pipe, which cancels the job too)."""
        if self.process is None or job_id != self._job_id:
            raise DaemonJobError("invalid_request", f"no job {job_id!r} runs through this bridge")
        if cancel is not None:
            threading.Thread(target=self._cancel_when_set, args=(cancel,), daemon=True).start()
        for fields, frames in iter(self._next, None):
            if (result := self._job_message(str(fields.get("event")), fields.get("body"), frames, on_progress)):
                return result
        raise self._stopped()

    def cancel(self, job_id: str) -> None:
        if self.process is not None and self.process.stdin is not None and job_id == self._job_id:
            try:
                write_message(self.process.stdin, {"op": "cancel"})
            except (OSError, ValueError):
                pass  # the bridge has gone: its job is cancelled as its pipe closed

    def status(self) -> StatusReply:
        return parse_reply(StatusReply, self._one_reply({"op": "status"}))

    def send_estimate(self, request: Estimate) -> EstimateReply:
        return parse_reply(EstimateReply, self._one_reply({"op": "estimate", "estimate": request.to_wire()}))

    # -- the pipe ---------------------------------------------------------------------------------
    def _one_reply(self, request: dict[str, Any]) -> Any:
        """The body of a request's one reply event, named as its op, from a bridge of its own."""
        self._start(request, [])
        try:
            return self._until(request["op"]).get("body")
        finally:
            self.close()

    def _until(self, event: str) -> dict[str, Any]:
        """The fields of the next ``event``, skipping others."""
        for fields, _ in iter(self._next, None):
            if fields.get("event") == event:
                return fields
        raise self._stopped()

    def _start(self, request: dict[str, Any], frames: Sequence[Buffer]) -> None:
        self.close()
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as error:
            raise DaemonUnreachableError(f"The bridge to the daemon could not be started ({error}); "
                                         "run python3 install.py again.") from None
        assert self.process.stdin is not None
        try:
            write_message(self.process.stdin, {**request, "start_command": self.start_command}, frames)
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
            if message is None or (event := message[0].get("event")) not in ("wait", "error"):
                return message
            if event == "error":
                raise _bridge_error(message[0])
            if self.on_wait is not None:
                self.on_wait(str(message[0].get("text", "")))

    def _cancel_when_set(self, cancel: threading.Event) -> None:
        while self.process is not None and (job_id := self._job_id) is not None:
            if cancel.wait(0.1):
                self.cancel(job_id)  # a no-op once the bridge is closed
                return

    def _stopped(self) -> DaemonUnreachableError:
        code = self.process.poll() if self.process is not None else None
        return DaemonUnreachableError(f"The bridge to the daemon stopped without a result (exit status {code}); "
                                      "see GIMP's error console or run: python -m daemon status")


def _bridge_error(fields: dict[str, Any]) -> DaemonError:
    if fields.get("kind") == "job":
        return DaemonJobError.from_wire(fields)
    error = DaemonUnreachableError if fields.get("kind") == "unreachable" else DaemonError
    return error(str(fields.get("message", "The daemon reported an error.")))


def connect_any(*, start_command: Sequence[str] | None, bridge_command: Sequence[str] | None,
                on_wait: Callable[[str], None] | None = None) -> StyleClient:
    """A DaemonClient where pyzmq and msgpack load (unless NEURAL_STYLE_BRIDGE=1), else a BridgeClient."""
    if os.environ.get(FORCE_BRIDGE_VARIABLE) != "1":
        try:
            from .zeromq import connect
        except ImportError as missing:
            log.info("Direct connection unavailable (%s); using the bridge", missing)
        else:
            return connect(start_command=start_command, on_wait=on_wait)
    if not bridge_command:
        raise DaemonUnreachableError("This GIMP's Python cannot load pyzmq and no bridge command is recorded; "
                                     "run python3 install.py again.")
    return BridgeClient(bridge_command, start_command, on_wait)


# -- the bridge process -------------------------------------------------------------------------------
def serve(requests: BinaryIO, events: BinaryIO) -> int:
    """Answer the one request read from ``requests``, writing its events to ``events``; the exit status."""
    from .zeromq import connect

    try:
        message = read_message(requests)
        if message is None:
            return 0
        request = _parse_request(*message)
    except (ValueError, ProtocolError) as error:
        # What the daemon would refuse reaches the plug-in as it would directly: the job's invalid_request.
        kind = {"kind": "job", "code": error.code.value} if isinstance(error, ProtocolError) else {"kind": "daemon"}
        _report_error(events, {**kind, "message": f"The bridge received a malformed request ({error})."})
        return EXIT_MALFORMED

    cancel = threading.Event()
    if isinstance(request.record, Submit):
        threading.Thread(target=_watch_for_cancel, args=(requests, cancel), daemon=True).start()

    def on_progress(progress: JobProgress) -> None:
        if (preview := progress.preview) is None:
            write_message(events, {"event": "progress", "body": progress.to_wire()})
        else:
            write_message(events, {"event": "preview", "body": Preview(progress, preview.spec).to_wire()},
                          [preview.data])

    try:
        with connect(start_command=request.start_command,
                     on_wait=lambda text: write_message(events, {"event": "wait", "text": text})) as client:
            if not isinstance(request.record, Submit):  # status or estimate: one reply, its event named as the op
                reply = client.status() if request.record is None else client.send_estimate(request.record)
                write_message(events, {"event": request.op, "body": reply.to_wire()})
                return 0
            job_id = client.send_submit(request.record, request.frames)
            write_message(events, {"event": "accepted", "job_id": job_id})
            result = client.wait(job_id, on_progress=on_progress, cancel=cancel)
        body = Result(result.job_id, result.image.spec, result.elapsed_s).to_wire()
        write_message(events, {"event": "result", "body": body}, [result.image.data])
        return 0
    except DaemonError as error:  # as the plug-in's side raises it again (_bridge_error)
        job = {"code": error.code, "largest_size": error.largest_size} if isinstance(error, DaemonJobError) else {}
        kind = "job" if job else "unreachable" if isinstance(error, DaemonUnreachableError) else "daemon"
        _report_error(events, {"kind": kind, "message": str(error), **job})
    return EXIT_FAILED


def _watch_for_cancel(requests: BinaryIO, cancel: threading.Event) -> None:
    """Cancel the job on a ``cancel`` message, or when the plug-in's end of the pipe closes (it is gone)."""
    # Unbuffered: a thread blocked inside a buffered read would hold its lock when the interpreter shuts down.
    stream = os.fdopen(requests.fileno(), "rb", buffering=0, closefd=False)
    try:
        while (message := read_message(stream)) is not None:
            if message[0].get("op") == "cancel":
                break
    except (OSError, ValueError):
        pass
    cancel.set()


@dataclass(frozen=True)
class _Request:
    op: str
    start_command: list[str] | None
    record: Submit | Estimate | None  # None: status
    frames: list[bytes]


def _parse_request(fields: dict[str, Any], frames: list[bytes]) -> _Request:
    """The request, checked: ValueError for a pipe message that is no request, ProtocolError for a record (or
    its frames) the daemon would refuse."""
    start_command = fields.get("start_command")
    if start_command is not None and (not isinstance(start_command, list)
                                      or not all(isinstance(part, str) for part in start_command)):
        raise ValueError("start_command must be a list of strings")
    if (op := fields.get("op")) not in ("submit", "estimate", "status"):
        raise ValueError(f"unknown op {op!r}")
    if not isinstance(body := fields.get(op, {}), dict):
        raise ValueError(f"{op} must be an object")
    record = (Submit.from_wire(body, MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS) if op == "submit"
              else Estimate.from_wire(body) if op == "estimate" else None)
    sizes = [entry.spec.nbytes for entry in record.images] if isinstance(record, Submit) else []
    if len(frames) != len(sizes):
        raise invalid(f"{len(sizes)} images described but {len(frames)} frames sent")
    for index, (size, frame) in enumerate(zip(sizes, frames)):
        if size != len(frame):
            raise invalid(f"images[{index}] needs {size} bytes but its frame has {len(frame)}")
    return _Request(op, start_command, record, frames)


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
    except Exception as error:  # a bug: the plug-in still gets one clear error event, the log the traceback
        log.exception("Unexpected error")
        message = f"The bridge to the daemon failed ({type(error).__name__}); its error output says where."
        _report_error(events, {"kind": "daemon", "message": message})
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
