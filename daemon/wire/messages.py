"""Every message body of the wire protocol as a typed record.  Torch-free and msgpack-free: the client,
the bridge (both sides) and the GIMP plug-in import it.

Each record has ``to_wire()`` (the body map) and a validating ``from_wire(body)`` that raises
:class:`ProtocolError` with ``invalid_request`` naming the first bad field.  :data:`MESSAGES` lists, per
message type, its record, who sends it and what answers it; docs/message_tables.py makes the tables of
docs/protocol.md from it (a test checks they agree).  The daemon's own limits (image sides, pixel
counts) are applied where it uses the records, since they are the daemon's configuration.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Protocol, Union

from nst_engine.errors import InvalidSettingsError
from nst_engine.schema import FrontEnd
from nst_engine.settings import check_values

from .limits import MAX_IMAGE_SIDE, MAX_IMAGES, MAX_STYLES

Buffer = Union[bytes, bytearray, memoryview]
PROTOCOL_VERSION = 2


class MessageType(str, enum.Enum):
    HELLO = "hello"
    WELCOME = "welcome"
    SUBMIT = "submit"
    ACCEPTED = "accepted"
    PROGRESS = "progress"
    PREVIEW = "preview"
    RESULT = "result"
    ERROR = "error"
    CANCEL = "cancel"
    STATUS = "status"
    STATUS_REPLY = "status_reply"
    ESTIMATE = "estimate"
    ESTIMATE_REPLY = "estimate_reply"
    PING = "ping"
    PONG = "pong"
    HEARTBEAT = "heartbeat"
    SHUTDOWN = "shutdown"
    SHUTTING_DOWN = "shutting_down"


class ErrorCode(str, enum.Enum):
    INVALID_REQUEST = "invalid_request"
    VERSION_MISMATCH = "version_mismatch"
    BUSY = "busy"
    WEIGHTS_UNAVAILABLE = "weights_unavailable"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message that must be refused; ``code`` says why in machine-readable form."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, message)


# ---------------------------------------------------------------------------------------------------
# Reading fields: each names the field in its error
# ---------------------------------------------------------------------------------------------------
def _map(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(f"{where} must be a map")
    return value


def _known(body: Mapping[str, Any], record: type, where: str, also: frozenset[str] = frozenset()) -> None:
    allowed = {item.metadata.get("wire", item.name) for item in fields(record) if item.metadata.get("wire", True)}
    unknown = set(body) - allowed - also
    if unknown:
        raise invalid(f"{where}: unknown field {sorted(unknown)[0]}")


def _int(body: Mapping[str, Any], name: str, where: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{where}{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _optional_int(body: Mapping[str, Any], name: str, where: str, low: int, high: int) -> int | None:
    return None if body.get(name) is None else _int(body, name, where, low, high)


def _number(body: Mapping[str, Any], name: str, where: str, default: float | None = None) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"{where}{name} must be a finite number, got {value!r}")
    return float(value)


def _optional_number(body: Mapping[str, Any], name: str, where: str) -> float | None:
    return None if body.get(name) is None else _number(body, name, where)


def _str(body: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise invalid(f"{where}{name} must be a string, got {value!r}")
    return value


def _optional_str(body: Mapping[str, Any], name: str, where: str) -> str | None:
    return None if body.get(name) is None else _str(body, name, where)


def _bool(body: Mapping[str, Any], name: str, where: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise invalid(f"{where}{name} must be true or false, got {value!r}")
    return value


def _doc(text: str, default: Any = MISSING, **more: Any) -> Any:
    """A field with its meaning, for the generated tables in docs/protocol.md."""
    return field(default=default, metadata={"doc": text, **more})


def _optional(text: str, default: Any = None, **more: Any) -> Any:
    return field(default=default, metadata={"doc": text, "optional": True, **more})


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------
class DType(str, enum.Enum):
    U8 = "u8"
    U16 = "u16"
    F32 = "f32"
    F16 = "f16"  # IEEE half precision, in [0, 1] like f32

    @property
    def itemsize(self) -> int:
        return {DType.U8: 1, DType.U16: 2, DType.F32: 4, DType.F16: 2}[self]


@dataclass(frozen=True)
class ImageSpec:
    """How one binary part is to be read: a height × width × channels array, row-major, little-endian."""

    width: int
    height: int
    channels: int  # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    dtype: DType

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * self.dtype.itemsize

    def to_wire(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "channels": self.channels, "dtype": self.dtype.value}

    @classmethod
    def from_wire(cls, spec: object, where: str = "image", max_side: int = MAX_IMAGE_SIDE,
                  max_pixels: int | None = None) -> ImageSpec:
        """Checked against sides of at most ``max_side`` and ``max_pixels`` pixels (None: no pixel limit)."""
        if not isinstance(spec, Mapping):
            raise invalid(f"{where} must be a map with width, height, channels and dtype")
        values: dict[str, int] = {}
        for name in ("width", "height", "channels"):
            if not _is_int(spec.get(name)):
                raise invalid(f"{where}.{name} must be an integer")
            values[name] = spec[name]
        width, height, channels = values["width"], values["height"], values["channels"]
        for name in ("width", "height"):
            if not 1 <= values[name] <= max_side:
                raise invalid(f"{where}.{name} must be from 1 to {max_side}, got {values[name]}")
        if max_pixels is not None and width * height > max_pixels:
            raise invalid(f"{where} has {width * height} pixels; the limit is {max_pixels}")
        if not 1 <= channels <= 4:
            raise invalid(f"{where}.channels must be 1 to 4, got {channels}")
        try:
            dtype = DType(spec.get("dtype"))
        except ValueError:
            raise invalid(f"{where}.dtype must be one of {', '.join(d.value for d in DType)}, got {spec.get('dtype')!r}") from None
        return cls(width, height, channels, dtype)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Image:
    """Raw pixels as sent over the wire: ``data`` holds spec.nbytes bytes, row-major, little-endian."""

    spec: ImageSpec
    data: Buffer


class ImageRole(str, enum.Enum):
    CONTENT = "content"  # once
    STYLE = "style"  # 1 to 15, in order
    INIT = "init"  # at most once
    REGION = "region"  # with "style": where that style applies in the output; 1 channel, the content's size
    STYLE_MASK = "style_mask"  # with "style": where that style's statistics come from; 1 channel, its size


MASK_ROLES = (ImageRole.REGION, ImageRole.STYLE_MASK)
RESULT_DTYPES = (DType.F32, DType.U16, DType.F16)


@dataclass(frozen=True)
class ImageEntry:
    """One entry of a submit's ``images``: the description of the binary part at the same index."""

    role: ImageRole
    spec: ImageSpec
    style: int | None = None  # for a mask: the index of its style image (0-based, in order of the styles)

    def to_wire(self) -> dict[str, Any]:
        return {"role": self.role.value, **self.spec.to_wire(), **({} if self.style is None else {"style": self.style})}

    @classmethod
    def from_wire(cls, entry: object, where: str, max_side: int = MAX_IMAGE_SIDE,
                  max_pixels: int | None = None) -> ImageEntry:
        entry = _map(entry, where)
        unknown = set(entry) - {"role", "width", "height", "channels", "dtype", "style"}
        if unknown:
            raise invalid(f"{where}: unknown field {sorted(unknown)[0]}")
        spec = ImageSpec.from_wire(entry, where, max_side, max_pixels)
        try:
            role = ImageRole(entry.get("role"))
        except ValueError:
            raise invalid(f"{where}.role must be one of {', '.join(r.value for r in ImageRole)}, "
                          f"got {entry.get('role')!r}") from None
        style = None
        if role in MASK_ROLES:
            style = _int(entry, "style", f"{where}.", 0, MAX_STYLES - 1)
        elif "style" in entry:
            raise invalid(f"{where}.style is only for a {ImageRole.REGION.value} or {ImageRole.STYLE_MASK.value}")
        return cls(role, spec, style)


def mask_name(role: ImageRole, style: int) -> str:
    """How an error message names a mask: the way the client's arguments do."""
    return f"{'regions' if role is ImageRole.REGION else 'style_masks'}[{style}]"


# ---------------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------------
class WireRecord(Protocol):
    def to_wire(self) -> dict[str, Any]: ...


class FieldAccess:
    """Mapping-style reading of a reply (``status["model"]``, ``"queue" in status``), as callers written
    against the plain body read it."""

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:  # type: ignore[attr-defined]
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in self.__dataclass_fields__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Empty:
    """The body of ping, pong, heartbeat, status, shutdown and shutting_down: ``{}``."""

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Empty:
        return cls()  # extra fields are ignored, for later additions


@dataclass(frozen=True)
class Hello:
    """The client's handshake, its first message on a connection."""

    protocol_version: int = _doc("the client's protocol version; the daemon answers version_mismatch to another")

    def to_wire(self) -> dict[str, Any]:
        return {"protocol_version": self.protocol_version}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Hello:
        version = body.get("protocol_version")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.VERSION_MISMATCH,
                                f"hello: protocol version {version!r} is not supported; the daemon speaks version "
                                f"{PROTOCOL_VERSION}")
        return cls(version)


@dataclass(frozen=True)
class Welcome(FieldAccess):
    """The daemon's answer to a hello of its version."""

    protocol_version: int = _doc("the daemon's protocol version")
    version: str = _doc("the daemon's software version")
    pid: int = _doc("the daemon's process id")

    def to_wire(self) -> dict[str, Any]:
        return {"protocol_version": self.protocol_version, "version": self.version, "pid": self.pid}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Welcome:
        return cls(_int(body, "protocol_version", "", 0, 1 << 31), _str(body, "version", ""),
                   _int(body, "pid", "", 0, 1 << 62))


@dataclass(frozen=True)
class Cancel:
    """Stop a queued or running job of this client's."""

    job_id: str = _doc("a job of this client's")

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Cancel:
        return cls(_str(body, "job_id", "cancel: "))


@dataclass(frozen=True)
class Submit:
    """A job; its images travel as binary parts, in the order of ``images``."""

    MAX_EVERY: ClassVar[int] = 100_000

    images: tuple[ImageEntry, ...] = _doc(
        "one entry per binary part: `{role, width, height, channels, dtype, style?}`; role `content` (once), "
        "`style` (1 to 15), `init` (at most once), `region` or `style_mask` (at most one of each per style, with "
        "`style`, the style's index from 0)", wire_type="list of maps")
    settings: dict[str, Any] = _optional("the engine's settings (table below); any may be left out", default=None)
    progress_every: int = _optional("send `progress` every N iterations", default=1)
    preview_every: int = _optional("send `preview` images every N iterations (0: none)", default=0)
    warm_start: str | None = _optional("start from the kept result of a job of this client's")
    output: tuple[int, int] | None = _optional(
        "`{width, height}`: resize the result (bicubic) to this size, within the pixel cap", wire_type="map or null")
    result_dtype: DType = _optional(
        "dtype of the result and previews: `f32` (default), or the compact `u16` (steps of 1/65535, finer than "
        "any u8 or u16 source's) or `f16`", default=DType.F32, wire_type="string")
    preview_max_side: int = _optional("previews scaled down to at most this longest side (0: the result's size)",
                                      default=0)
    # Test-only fault injection: honoured only by a daemon started with the hidden --test-faults, and not
    # part of the public schema (docs/protocol.md documents it as test-only).
    fault: str | None = field(default=None, metadata={"test_only": True})

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"images": [entry.to_wire() for entry in self.images],
                                "settings": dict(self.settings or {}),
                                "progress_every": self.progress_every, "preview_every": self.preview_every}
        if self.warm_start is not None:
            body["warm_start"] = self.warm_start
        if self.output is not None:
            body["output"] = {"width": self.output[0], "height": self.output[1]}
        if self.result_dtype is not DType.F32:
            body["result_dtype"] = self.result_dtype.value
        if self.preview_max_side:
            body["preview_max_side"] = self.preview_max_side
        if self.fault is not None:
            body["fault"] = self.fault
        return body

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], max_side: int = MAX_IMAGE_SIDE, max_pixels: int | None = None) -> Submit:
        _known(body, cls, "submit")
        settings = validate_settings(body.get("settings", {}))
        images = body.get("images")
        if not isinstance(images, list) or not 2 <= len(images) <= MAX_IMAGES:
            raise invalid(f"submit: images must list the content, 1 to {MAX_STYLES} styles, an optional init image "
                          "and optional masks")
        entries = tuple(ImageEntry.from_wire(entry, f"images[{index}]", max_side, max_pixels)
                        for index, entry in enumerate(images))
        _check_roles(entries)
        output = None
        if body.get("output") is not None:
            size = _map(body["output"], "output")
            output = (_int(size, "width", "output.", 1, max_side), _int(size, "height", "output.", 1, max_side))
            if max_pixels is not None and output[0] * output[1] > max_pixels:
                raise invalid(f"output has {output[0] * output[1]} pixels ({output[0]}×{output[1]}); "
                              f"the limit is {max_pixels}")
        fault = body.get("fault")
        try:
            result_dtype = DType(body.get("result_dtype", DType.F32.value))
        except ValueError:
            raise invalid(f"result_dtype must be one of {', '.join(d.value for d in RESULT_DTYPES)}, "
                          f"got {body.get('result_dtype')!r}") from None
        if result_dtype not in RESULT_DTYPES:
            raise invalid(f"result_dtype must be one of {', '.join(d.value for d in RESULT_DTYPES)}, got {result_dtype.value!r}")
        return cls(entries, settings, _int(body, "progress_every", "", 1, cls.MAX_EVERY, 1),
                   _int(body, "preview_every", "", 0, cls.MAX_EVERY, 0), _optional_str(body, "warm_start", ""),
                   output, result_dtype, _int(body, "preview_max_side", "", 0, max_side, 0),
                   fault if isinstance(fault, str) else None)

    # -- the images by role ------------------------------------------------------------------------
    def indices(self, role: ImageRole) -> list[int]:
        return [index for index, entry in enumerate(self.images) if entry.role is role]

    def masks(self, role: ImageRole) -> list[int | None] | None:
        """Per style, the index of its mask of ``role`` among the parts (None: none); None when no style has one."""
        found = {self.images[index].style: index for index in self.indices(role)}
        if not found:
            return None
        return [found.get(style) for style in range(len(self.indices(ImageRole.STYLE)))]


def _check_roles(entries: Sequence[ImageEntry]) -> None:
    """Counts of each role, and each mask's shape against its style (or the content)."""
    def where(index: int) -> str:
        return f"images[{index}]"

    contents = [i for i, e in enumerate(entries) if e.role is ImageRole.CONTENT]
    styles = [i for i, e in enumerate(entries) if e.role is ImageRole.STYLE]
    inits = [i for i, e in enumerate(entries) if e.role is ImageRole.INIT]
    if len(contents) > 1:
        raise invalid(f"{where(contents[1])}.role: content must come once")
    if len(inits) > 1:
        raise invalid(f"{where(inits[1])}.role: init must come at most once")
    if not contents or not styles:
        raise invalid("submit: needs one content image and at least one style image")
    if len(styles) > MAX_STYLES:
        raise invalid(f"submit: {len(styles)} style images; the limit is {MAX_STYLES}")
    content = entries[contents[0]].spec
    seen: set[tuple[ImageRole, int]] = set()
    for index, entry in enumerate(entries):
        if entry.role not in MASK_ROLES:
            continue
        assert entry.style is not None
        name = mask_name(entry.role, entry.style)
        if entry.style >= len(styles):
            raise invalid(f"{where(index)} ({name}): there are only {len(styles)} style images, so style must be "
                          f"from 0 to {len(styles) - 1}")
        if (entry.role, entry.style) in seen:
            raise invalid(f"{where(index)} ({name}): a second {entry.role.value} for style {entry.style}")
        seen.add((entry.role, entry.style))
        target = content if entry.role is ImageRole.REGION else entries[styles[entry.style]].spec
        owner = "the content" if entry.role is ImageRole.REGION else f"style image {entry.style}"
        if entry.spec.channels != 1:
            raise invalid(f"{where(index)} ({name}) must have 1 channel (grey), got {entry.spec.channels}")
        if (entry.spec.width, entry.spec.height) != (target.width, target.height):
            raise invalid(f"{where(index)} ({name}) is {entry.spec.width}×{entry.spec.height} but must be the size of "
                          f"{owner}, {target.width}×{target.height}")


@dataclass(frozen=True)
class Accepted:
    """The job is queued."""

    job_id: str = _doc("the new job's id")
    position: int = _doc("its place in the queue (0: next)")

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "position": self.position}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Accepted:
        return cls(_str(body, "job_id", ""), _int(body, "position", "", 0, 1 << 31))


LOSS_TERMS = ("content", "style", "tv", "total")


@dataclass(frozen=True)
class JobProgress:
    """One iteration of a job (the ``progress`` body; ``preview`` adds the current image)."""

    job_id: str = _doc("the job")
    stage: int = _doc("the coarse-to-fine stage, from 1")
    stages: int = _doc("how many stages")
    iteration: int = _doc("iteration over all stages, from 1")
    total_iterations: int = _doc("iterations over all stages")
    width: int = _doc("this stage's image width")
    height: int = _doc("this stage's image height")
    losses: dict[str, float] = _doc("`{content, style, tv, total}`: the weighted loss terms")
    elapsed_s: float = _doc("seconds since the job started running")
    stage_iteration: int = _doc("iteration within the stage, from 1", default=0)
    stage_iterations: int = _doc("iterations of the stage", default=0)
    preview: Image | None = field(default=None, metadata={"wire": False})  # the preview's pixels, not in the body

    def to_wire(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self) if item.metadata.get("wire", True)}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], preview: Image | None = None) -> JobProgress:
        _known(body, cls, "progress", also=frozenset({"image"}))
        counts = {name: _int(body, name, "", 0, 1 << 40) for name in
                  ("stage", "stages", "iteration", "total_iterations", "width", "height", "stage_iteration",
                   "stage_iterations")}
        losses = _map(body.get("losses"), "losses")
        return cls(job_id=_str(body, "job_id", ""), losses={name: _number(losses, name, "losses.") for name in LOSS_TERMS},
                   elapsed_s=_number(body, "elapsed_s", ""), preview=preview, **counts)


@dataclass(frozen=True)
class Preview:
    """``progress``'s fields plus ``image``, the spec of the current image (its one binary part)."""

    progress: JobProgress = _doc("as `progress`", flatten=True)
    image: ImageSpec = _doc("`{width, height, channels, dtype}` of the current image: RGB in the submit's `result_dtype`")

    def to_wire(self) -> dict[str, Any]:
        return {**self.progress.to_wire(), "image": self.image.to_wire()}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Preview:
        return cls(JobProgress.from_wire(body), ImageSpec.from_wire(body.get("image"), "image", max_pixels=None))


@dataclass(frozen=True)
class Result:
    """The stylised image of a job that finished."""

    job_id: str = _doc("the job")
    image: ImageSpec = _doc("`{width, height, channels, dtype}` of the result (its one binary part): RGB in the submit's "
                                   "`result_dtype`")
    elapsed_s: float = _doc("seconds the job ran")

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "image": self.image.to_wire(), "elapsed_s": self.elapsed_s}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Result:
        return cls(_str(body, "job_id", ""), ImageSpec.from_wire(body.get("image"), "image"),
                   _number(body, "elapsed_s", "", 0.0))


@dataclass(frozen=True)
class Error:
    """A refused request, or a job that failed or was cancelled."""

    code: ErrorCode = _doc("for programs: " + ", ".join(f"`{code.value}`" for code in ErrorCode))
    message: str = _doc("for people: one line, fit to show to a user")
    job_id: str | None = _optional("the job it ends, for a job's error")
    largest_size: int | None = _optional("with `out_of_memory`: the longest side that should fit")
    request: str | None = _optional("the type of the request it answers, for a refused request")

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "message": self.message}
        for name in ("job_id", "largest_size", "request"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        return body

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Error:
        """Lenient: an error is reported whatever else is wrong with it (an unknown code reads as internal)."""
        try:
            code = ErrorCode(body.get("code"))
        except ValueError:
            code = ErrorCode.INTERNAL
        message = body.get("message")
        largest = body.get("largest_size")
        return cls(code, message if isinstance(message, str) else "The daemon reported an error.",
                   body.get("job_id") if isinstance(body.get("job_id"), str) else None,
                   largest if _is_int(largest) else None,
                   body.get("request") if isinstance(body.get("request"), str) else None)

    @classmethod
    def of(cls, error: ProtocolError, request: MessageType | None = None) -> Error:
        return cls(error.code, str(error), request=None if request is None else request.value)


@dataclass(frozen=True)
class StatusReply(FieldAccess):
    """The daemon's state as the asking client may see it (other clients' jobs are counted, not named)."""

    version: str = _doc("the daemon's software version")
    protocol_version: int = _doc("its protocol version")
    pid: int = _doc("its process id")
    endpoint: str = _doc("where it listens")
    transport: str = _doc("`ipc` or `tcp+curve`")
    uptime_s: float = _doc("seconds since it started")
    device: str = _doc("where jobs run, e.g. `cpu`, `cuda:0`")
    precision: dict[str, str] = _doc("`{auto, reason}`: what a job's `auto` precision runs in on that device, and why")
    model: str = _doc("`not_loaded`, `loading`, `loaded` or `failed`")
    model_error: str | None = _doc("why loading failed, or null")
    queue: list[str | None] = _doc("queued jobs in order: the asking client's by id, other clients' as null")
    queue_capacity: int = _doc("queued jobs beyond which a submit is `busy`")
    running: dict[str, Any] | None = _doc("`{job_id, progress}` (both null for another client's job), or null when idle")
    jobs_done: int = _doc("jobs finished since start")
    devices: list[dict[str, Any]] = _doc(
        "one entry per device's worker: `index`, `device`, `name` (the GPU's model on CUDA), `model`, `model_error`, "
        "`memory` (`available_bytes`; on CUDA `total_bytes`, `allocated_bytes`), `running` (as `running`), "
        "`jobs_done`, `style_cache_entries`")
    style_cache: dict[str, int] = _doc("`{hits, misses, entries, bytes}` of the style Gram cache")
    kept_results: int = _doc("results kept for warm starts")
    memory: dict[str, Any] = _doc(
        "`rss_bytes`; on CUDA `cuda_allocated_bytes`, `cuda_max_allocated_bytes` (summed over the GPUs); `available_bytes` (the memory "
        "budget or what the device has free); `largest_size` and `largest_whole_size`, maps from optimiser to the "
        "longest side of the largest square image that runs now, in tiles where needed or whole")
    seconds_per_megapixel_iteration: float | None = _doc(
        "measured seconds of one optimiser iteration per megapixel on this device, beside its fixed part: a "
        "running fit over the jobs run so far, null before the first")
    seconds_per_iteration: float | None = _doc(
        "the fixed part of an optimiser iteration's seconds, whatever the size (0 until jobs of two sizes have "
        "run), null before the first job")
    versions: dict[str, str] = _doc("versions of Python, torch, torchvision, pyzmq, libzmq, msgpack")

    def to_wire(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> StatusReply:
        missing = [item.name for item in fields(cls) if item.name not in body]
        if missing:
            raise invalid(f"status_reply: missing field {missing[0]}")
        return cls(**{item.name: body[item.name] for item in fields(cls)})



@dataclass(frozen=True)
class Estimate:
    """What a job would cost, from its settings and sizes alone (no pixels)."""

    width: int = _doc("the content's width")
    height: int = _doc("the content's height")
    settings: dict[str, Any] = _optional("the job's settings, as in `submit`", default=None)
    style_sizes: tuple[tuple[int, int], ...] = _optional(
        "`[[width, height], ...]`, one per style image", default=(), wire_type="list of [width, height]")

    def to_wire(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "settings": dict(self.settings or {}),
                "style_sizes": [list(size) for size in self.style_sizes]}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], max_side: int = MAX_IMAGE_SIDE) -> Estimate:
        _known(body, cls, "estimate")
        sizes = body.get("style_sizes", [])
        if not isinstance(sizes, list) or len(sizes) > MAX_STYLES:
            raise invalid(f"estimate: style_sizes must list at most {MAX_STYLES} [width, height] pairs")
        style_sizes = []
        for index, size in enumerate(sizes):
            if not isinstance(size, list) or len(size) != 2 or not all(_is_int(side) and 1 <= side <= max_side for side in size):
                raise invalid(f"estimate: style_sizes[{index}] must be [width, height], each from 1 to {max_side}")
            style_sizes.append((size[0], size[1]))
        return cls(_int(body, "width", "estimate: ", 1, max_side), _int(body, "height", "estimate: ", 1, max_side),
                   validate_settings(body.get("settings", {})), tuple(style_sizes))


@dataclass(frozen=True)
class EstimateReply(FieldAccess):
    """What the job would cost now, on the daemon's device with the memory it has."""

    memory_bytes: int = _doc("peak memory of the largest stage, by the engine's memory model (nst_engine/memory.py)")
    available_bytes: int = _doc("the memory a job may use now (the budget, or what the device has free)")
    tiled: bool = _doc("whether some stage runs in tiles")
    tiles: int = _doc("tiles per evaluation at the final stage (1: whole, or one tile over all of it)")
    lbfgs_history: int = _doc("the L-BFGS history the final stage keeps: 50, shorter where memory is short")
    iterations: int = _doc("optimiser iterations over all stages")
    seconds: float | None = _doc("expected running time, from the daemon's measured seconds per iteration and "
                                 "per megapixel-iteration (status's `seconds_per_iteration` and "
                                 "`seconds_per_megapixel_iteration`); null until it has run a job")
    runnable: bool = _doc("whether it can run now (else a submit fails with `out_of_memory`)")
    largest_size: int = _doc("the longest side of the largest output of this shape that can run now")
    output_width: int = _doc("the result's width")
    output_height: int = _doc("the result's height")

    def to_wire(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> EstimateReply:
        return cls(_int(body, "memory_bytes", "", 0, 1 << 62), _int(body, "available_bytes", "", 0, 1 << 62),
                   _bool(body, "tiled", ""), _int(body, "tiles", "", 1, 1 << 31), _int(body, "lbfgs_history", "", 0, 1 << 31),
                   _int(body, "iterations", "", 0, 1 << 40),
                   _optional_number(body, "seconds", ""), _bool(body, "runnable", ""),
                   _int(body, "largest_size", "", 0, 1 << 31), _int(body, "output_width", "", 1, 1 << 31),
                   _int(body, "output_height", "", 1, 1 << 31))


def validate_settings(settings: object) -> dict[str, Any]:
    """Check a ``settings`` map against the engine's settings schema; ProtocolError naming the first bad field."""
    if not isinstance(settings, Mapping):
        raise invalid("settings must be a map")
    try:
        check_values(settings, FrontEnd.WIRE, prefix="settings.")
    except InvalidSettingsError as error:
        raise invalid(str(error)) from None
    return dict(settings)


# ---------------------------------------------------------------------------------------------------
# The message table
# ---------------------------------------------------------------------------------------------------
class Sender(str, enum.Enum):
    CLIENT = "client"
    DAEMON = "daemon"


@dataclass(frozen=True)
class MessageKind:
    type: MessageType
    record: type
    sender: Sender
    answer: str  # what answers it (requests) or when it is sent (the daemon's messages)


MESSAGES: dict[MessageType, MessageKind] = {kind.type: kind for kind in (
    MessageKind(MessageType.HELLO, Hello, Sender.CLIENT, "`welcome`, or `error` `version_mismatch`"),
    MessageKind(MessageType.PING, Empty, Sender.CLIENT, "`pong`"),
    MessageKind(MessageType.HEARTBEAT, Empty, Sender.CLIENT,
                "`pong` (sent every 0.5 s while the client waits for a job; the daemon cancels the jobs of a "
                "client silent for 1.5 s)"),
    MessageKind(MessageType.STATUS, Empty, Sender.CLIENT, "`status_reply`"),
    MessageKind(MessageType.ESTIMATE, Estimate, Sender.CLIENT, "`estimate_reply`"),
    MessageKind(MessageType.SUBMIT, Submit, Sender.CLIENT,
                "`accepted`, then `progress`/`preview`…, then `result` or the job's `error`"),
    MessageKind(MessageType.CANCEL, Cancel, Sender.CLIENT,
                "the job's `error` with code `cancelled`; `invalid_request` for a job of another client"),
    MessageKind(MessageType.SHUTDOWN, Empty, Sender.CLIENT, "`shutting_down`, then the daemon exits"),
    MessageKind(MessageType.WELCOME, Welcome, Sender.DAEMON, "answers `hello`"),
    MessageKind(MessageType.PONG, Empty, Sender.DAEMON, "answers `ping` and `heartbeat`"),
    MessageKind(MessageType.STATUS_REPLY, StatusReply, Sender.DAEMON, "answers `status`"),
    MessageKind(MessageType.ESTIMATE_REPLY, EstimateReply, Sender.DAEMON, "answers `estimate`"),
    MessageKind(MessageType.ACCEPTED, Accepted, Sender.DAEMON, "answers `submit`"),
    MessageKind(MessageType.PROGRESS, JobProgress, Sender.DAEMON, "every `progress_every` iterations of a job"),
    MessageKind(MessageType.PREVIEW, Preview, Sender.DAEMON,
                "every `preview_every` iterations, with the current image as its one binary part"),
    MessageKind(MessageType.RESULT, Result, Sender.DAEMON, "a job's end, with the result as its one binary part"),
    MessageKind(MessageType.ERROR, Error, Sender.DAEMON, "a refused request, or a job's end"),
    MessageKind(MessageType.SHUTTING_DOWN, Empty, Sender.DAEMON, "answers `shutdown`"),
)}
assert set(MESSAGES) == set(MessageType), "every message type has a record"
