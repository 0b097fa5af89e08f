"""Every message body of the wire protocol as a typed record.  Torch-free and msgpack-free: the client,
the bridge (both sides) and the GIMP plug-in import it.

Each record has ``to_wire()`` (the body map) and a validating ``from_wire(body)`` that raises
:class:`ProtocolError` with ``invalid_request`` naming the first bad field; both are generic (:class:`WireRecord`).
:data:`MESSAGES` lists, per message type, its record, who sends it and what answers it;
docs/message_tables.py makes the tables of docs/protocol.md from it (a test checks they agree).  The daemon's
own limits (image sides, pixel counts) are applied where it uses the records, since they are its configuration.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

from nst_engine.errors import InvalidSettingsError
from nst_engine.schema import FrontEnd
from nst_engine.settings import DEFAULT_TEMPORAL_WEIGHT, MAX_ITERATIONS, MAX_WEIGHT, check_values

from .limits import MAX_IMAGE_SIDE, MAX_IMAGES, MAX_SEQUENCE_FRAMES, MAX_STYLES

Buffer = bytes | bytearray | memoryview
PROTOCOL_VERSION = 2


class MessageType(str, enum.Enum):
    HELLO = "hello"
    WELCOME = "welcome"
    SUBMIT = "submit"
    FRAME = "frame"
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


def validate_settings(settings: object) -> dict[str, Any]:
    """Check a ``settings`` map against the engine's settings schema; ProtocolError naming the first bad field."""
    if not isinstance(settings, Mapping):
        raise invalid("settings must be a map")
    try:
        check_values(settings, FrontEnd.WIRE, prefix="settings.")
    except InvalidSettingsError as error:
        raise invalid(str(error)) from None
    return dict(settings)


# -- The generic codec: a record's fields to and from its body, led by each field's type and metadata ---
_R = TypeVar("_R")
_MAX_SIDE = "max_side"  # as an integer bound: the max_side given to from_wire


def _doc(text: str, default: Any = MISSING, **more: Any) -> Any:
    """A field with its meaning, for the tables in docs/protocol.md, and how :func:`_value` reads it."""
    return field(default=default, metadata={"doc": text, **more})


def _optional(text: str, default: Any = None, *, factory: Callable[[], Any] | None = None, always_sent: bool = False,
              **more: Any) -> Any:
    """A field that a body may leave out (it keeps its default); sent only off its default unless ``always_sent``."""
    given = {"default_factory": factory} if factory else {"default": default}
    return field(**given, metadata={"doc": text, "optional": True, "omit_default": not always_sent, **more})


@functools.cache
def _wire_fields(record: type) -> list[tuple[Field, Any]]:
    """The record's fields that are in its body, each with its type."""
    hints = get_type_hints(record)
    return [(item, hints[item.name]) for item in fields(record) if item.metadata.get("wire", True)]


class WireRecord:
    """A message body, or part of one.  Its generic ``to_wire()`` and ``from_wire(body)`` walk its fields, led by
    each field's type and metadata (:func:`_doc`, :func:`_optional`); a record overrides them only for what is its
    alone (cross-field checks, a lenient or version-checking read).  The generic reading ignores keys it does not
    know (for later additions); :func:`_known` refuses them."""

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for item, _ in _wire_fields(type(self)):
            value = getattr(self, item.name)
            if item.metadata.get("flatten"):
                body.update(value.to_wire())
            elif not (item.metadata.get("omit_default") and value == item.default):
                body[item.name] = _encode(value, item.metadata.get("names"))
        return body

    @classmethod
    def from_wire(cls: type[_R], body: Mapping[str, Any]) -> _R:
        return cls(**_read(cls, body))


def _encode(value: Any, names: Sequence[str] | None = None) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "to_wire"):
        return value.to_wire()
    if isinstance(value, (tuple, list)):
        return dict(zip(names, value)) if names else [_encode(item) for item in value]
    return value


def _read(record: type, body: Mapping[str, Any], prefix: str = "", **limits: Any) -> dict[str, Any]:
    """The record's fields from ``body``, checked in order, ``prefix`` leading their names in errors; ``limits``
    (max_side, max_pixels) go to the bounds and the records within."""
    values = {}
    for item, kind in _wire_fields(record):
        if item.metadata.get("flatten"):
            values[item.name] = kind.from_wire(body, prefix.removesuffix("."), **limits)
        elif item.name in body or not item.metadata.get("optional"):  # else it keeps its default
            value = body.get(item.name, item.metadata.get("missing"))
            values[item.name] = _value(kind, value, prefix + item.name, item.metadata, limits)
    return values


def _value(kind: Any, value: Any, at: str, meta: Mapping[str, Any], limits: Mapping[str, Any]) -> Any:
    """``value`` read as a ``kind`` (a field's type, or part of one), named ``at`` in errors.  The field's
    metadata: ``low``/``high`` bound an integer (0 to 2**31 unless given), ``choices`` narrows an enum,
    ``names`` reads a map of those names (into a tuple or dict), ``count`` bounds a list (``listing`` says how
    in the error), ``check`` reads the value itself, ``missing`` is what an absent required field reads as."""
    if type(None) in get_args(kind):  # X | None
        if value is None:
            return None
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    origin, args = get_origin(kind) or kind, get_args(kind)
    if "check" in meta:
        return meta["check"](value)
    if origin in (bool, str):
        if not isinstance(value, origin):
            raise invalid(f"{at} must be {'true or false' if origin is bool else 'a string'}, got {value!r}")
        return value
    if origin is int:
        low, high = (limits[bound] if isinstance(bound, str) else bound
                     for bound in (meta.get("low", 0), meta.get("high", 1 << 31)))
        if not _is_int(value) or not low <= value <= high:
            raise invalid(f"{at} must be an integer from {low} to {high}, got {value!r}")
        return value
    if origin is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise invalid(f"{at} must be a finite number, got {value!r}")
        return float(value)
    if isinstance(origin, enum.EnumMeta):
        choices = [choice.value for choice in meta.get("choices", origin)]
        if value not in choices:
            raise invalid(f"{at} must be one of {', '.join(choices)}, got {value!r}")
        return origin(value)
    if hasattr(origin, "from_wire"):
        return origin.from_wire(value, at, **limits)
    if "names" in meta:
        read = [_value(args[-1], _map(value, at).get(name), f"{at}.{name}", meta, limits) for name in meta["names"]]
        return tuple(read) if origin is tuple else dict(zip(meta["names"], read))
    if origin is tuple:  # a list: tuple[X, ...] within the field's count, or of fixed length
        variadic = args[-1] is Ellipsis
        low, high = meta["count"] if variadic else (len(args), len(args))
        if not isinstance(value, list) or not low <= len(value) <= high:
            raise invalid(f"{at} must list {meta['listing'] if variadic else f'{low} items'}")
        return tuple(_value(args[0 if variadic else index], item, f"{at}[{index}]", meta, limits)
                     for index, item in enumerate(value))
    raise TypeError(f"{at}: no wire reading for {kind}")


def _names(record: type) -> set[str]:
    """The keys of the record's body, with those of the records it flattens."""
    return set().union(*(_names(kind) if item.metadata.get("flatten") else {item.name}
                         for item, kind in _wire_fields(record)))


def _known(body: Mapping[str, Any], record: type, where: str, also: frozenset[str] = frozenset()) -> None:
    unknown = set(body) - _names(record) - also
    if unknown:
        raise invalid(f"{where}: unknown field {min(unknown)}")


def _map(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(f"{where} must be a map")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- Images ------------------------------------------------------------------------------------------
class DType(str, enum.Enum):
    U8 = "u8"
    U16 = "u16"
    F32 = "f32"
    F16 = "f16"  # IEEE half precision, in [0, 1] like f32

    @property
    def itemsize(self) -> int:
        return {DType.U8: 1, DType.U16: 2, DType.F32: 4, DType.F16: 2}[self]


@dataclass(frozen=True)
class ImageSpec(WireRecord):
    """How one binary part is to be read: a height × width × channels array, row-major, little-endian."""

    width: int
    height: int
    channels: int  # 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    dtype: DType

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * self.dtype.itemsize

    @classmethod
    def from_wire(cls, spec: object, where: str = "image", max_side: int = MAX_IMAGE_SIDE,
                  max_pixels: int | None = None) -> ImageSpec:
        """Checked against sides of at most ``max_side`` and ``max_pixels`` pixels (None: no pixel limit)."""
        if not isinstance(spec, Mapping):
            raise invalid(f"{where} must be a map with width, height, channels and dtype")
        for name in ("width", "height", "channels"):
            if not _is_int(spec.get(name)):
                raise invalid(f"{where}.{name} must be an integer")
        width, height, channels = spec["width"], spec["height"], spec["channels"]
        for name, side in (("width", width), ("height", height)):
            if not 1 <= side <= max_side:
                raise invalid(f"{where}.{name} must be from 1 to {max_side}, got {side}")
        if max_pixels is not None and width * height > max_pixels:
            raise invalid(f"{where} has {width * height} pixels; the limit is {max_pixels}")
        if not 1 <= channels <= 4:
            raise invalid(f"{where}.channels must be 1 to 4, got {channels}")
        return cls(width, height, channels, _value(DType, spec.get("dtype"), f"{where}.dtype", {}, {}))


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
class ImageEntry(WireRecord):
    """One entry of a submit's ``images``: the description of the binary part at the same index."""

    role: ImageRole
    spec: ImageSpec = field(metadata={"flatten": True})  # its fields are the entry's
    style: int | None = _optional("for a mask: the index of its style image (0-based, in order of the styles)",
                                  high=MAX_STYLES - 1)

    @classmethod
    def from_wire(cls, entry: object, where: str, max_side: int = MAX_IMAGE_SIDE,
                  max_pixels: int | None = None) -> ImageEntry:
        _known(_map(entry, where), cls, where)
        read = cls(**_read(cls, entry, f"{where}.", max_side=max_side, max_pixels=max_pixels))
        if read.role in MASK_ROLES and read.style is None:
            raise invalid(f"{where}.style must be an integer from 0 to {MAX_STYLES - 1} for a {read.role.value}, "
                          "got None")
        if read.role not in MASK_ROLES and "style" in entry:
            raise invalid(f"{where}.style is only for a {ImageRole.REGION.value} or {ImageRole.STYLE_MASK.value}")
        return read


# -- Bodies ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Empty(WireRecord):
    """The body of ping, pong, heartbeat, status, shutdown and shutting_down: ``{}``."""


@dataclass(frozen=True)
class Hello(WireRecord):
    """The client's handshake, its first message on a connection."""

    protocol_version: int = _doc("the client's protocol version; the daemon answers version_mismatch to another")

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Hello:
        version = body.get("protocol_version")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.VERSION_MISMATCH,
                                f"hello: protocol version {version!r} is not supported; the daemon speaks version "
                                f"{PROTOCOL_VERSION}")
        return cls(version)


@dataclass(frozen=True)
class Welcome(WireRecord):
    """The daemon's answer to a hello of its version."""

    protocol_version: int = _doc("the daemon's protocol version")
    version: str = _doc("the daemon's software version")
    pid: int = _doc("the daemon's process id", high=1 << 62)


@dataclass(frozen=True)
class Cancel(WireRecord):
    """Stop a queued or running job of this client's."""

    job_id: str = _doc("a job of this client's")

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Cancel:
        return cls(**_read(cls, body, "cancel: "))


@dataclass(frozen=True)
class SequencePlan(WireRecord):
    """A submit's ``sequence``: the job stylises an animation's frames consistently (docs/animation.md)."""

    frames: int = _doc("how many frames", low=2, high=MAX_SEQUENCE_FRAMES)
    temporal_weight: float = _optional("how strongly a frame keeps the previous result (0: each frame alone)",
                                       default=DEFAULT_TEMPORAL_WEIGHT, always_sent=True)
    frame_iterations: int = _optional("iterations of each later frame (0: the engine's share)", default=0,
                                      always_sent=True, high=MAX_ITERATIONS)

    @classmethod
    def from_wire(cls, value: object, where: str = "sequence", **_: Any) -> SequencePlan:
        _known(_map(value, where), cls, where)
        plan = cls(**_read(cls, value, f"{where}."))  # type: ignore[arg-type]
        if not 0 <= plan.temporal_weight <= MAX_WEIGHT:
            raise invalid(f"{where}.temporal_weight must be from 0 to {MAX_WEIGHT:g}, got {plan.temporal_weight}")
        return plan


@dataclass(frozen=True)
class Submit(WireRecord):
    """A job; its images travel as binary parts, in the order of ``images``."""

    MAX_EVERY: ClassVar[int] = 100_000

    images: tuple[ImageEntry, ...] = _doc(
        "one entry per binary part: `{role, width, height, channels, dtype, style?}`; role `content` (once), "
        "`style` (1 to 15), `init` (at most once), `region` or `style_mask` (at most one of each per style, with "
        "`style`, the style's index from 0)", wire_type="list of maps", count=(2, MAX_IMAGES),
        listing=f"the content, 1 to {MAX_STYLES} styles, an optional init image and optional masks")
    settings: dict[str, Any] = _optional("the engine's settings (table below); any may be left out", factory=dict,
                                         always_sent=True, check=validate_settings)
    progress_every: int = _optional("send `progress` every N iterations", default=1, always_sent=True, low=1,
                                    high=MAX_EVERY)
    preview_every: int = _optional("send `preview` images every N iterations (0: none)", default=0,
                                   always_sent=True, high=MAX_EVERY)
    warm_start: str | None = _optional("start from the kept result of a job of this client's")
    output: tuple[int, int] | None = _optional(
        "`{width, height}`: resize the result (bicubic) to this size, within the pixel cap", wire_type="map or null",
        names=("width", "height"), low=1, high=_MAX_SIDE)
    result_dtype: DType = _optional(
        "dtype of the result and previews: `f32` (default), or the compact `u16` (steps of 1/65535, finer than "
        "any u8 or u16 source's) or `f16`", default=DType.F32, wire_type="string", choices=RESULT_DTYPES)
    preview_max_side: int = _optional("previews scaled down to at most this longest side (0: the result's size)",
                                      default=0, high=_MAX_SIDE)
    sequence: SequencePlan | None = _optional(
        "`{frames, temporal_weight, frame_iterations}`: an animation, stylised frame to frame consistently (see "
        "Sequences); the content is its first frame, the others follow as `frame` messages. `temporal_weight` (default "
        f"{DEFAULT_TEMPORAL_WEIGHT:g}; 0: each frame alone) and `frame_iterations` (default 0: a quarter of "
        "`settings.iterations`) are the engine's", wire_type="map or null")
    # Test-only fault injection: honoured only by a daemon started with the hidden --test-faults, and not
    # part of the public schema (docs/protocol.md documents it as test-only).  Anything but a string is ignored.
    fault: str | None = _optional("the fault to inject", test_only=True,
                                  check=lambda fault: fault if isinstance(fault, str) else None)

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], max_side: int = MAX_IMAGE_SIDE,
                  max_pixels: int | None = None) -> Submit:
        _known(body, cls, "submit")
        submit = cls(**_read(cls, body, max_side=max_side, max_pixels=max_pixels))
        submit._check_roles()
        if submit.output is not None and max_pixels is not None and submit.output[0] * submit.output[1] > max_pixels:
            width, height = submit.output
            raise invalid(f"output has {width * height} pixels ({width}×{height}); the limit is {max_pixels}")
        return submit

    # -- the images by role ------------------------------------------------------------------------
    def indices(self, role: ImageRole) -> list[int]:
        return [index for index, entry in enumerate(self.images) if entry.role is role]

    def masks(self, role: ImageRole) -> list[int | None] | None:
        """Per style, the index of its mask of ``role`` among the parts (None: none); None when no style has one."""
        found = {self.images[index].style: index for index in self.indices(role)}
        if not found:
            return None
        return [found.get(style) for style in range(len(self.indices(ImageRole.STYLE)))]

    def _check_roles(self) -> None:
        """Counts of each role, and each mask's shape against its style (or the content)."""
        for role, rule in ((ImageRole.CONTENT, "must come once"), (ImageRole.INIT, "must come at most once")):
            if len(self.indices(role)) > 1:
                raise invalid(f"images[{self.indices(role)[1]}].role: {role.value} {rule}")
        contents, styles = self.indices(ImageRole.CONTENT), self.indices(ImageRole.STYLE)
        if not contents or not styles:
            raise invalid("submit: needs one content image and at least one style image")
        if len(styles) > MAX_STYLES:
            raise invalid(f"submit: {len(styles)} style images; the limit is {MAX_STYLES}")
        seen: set[tuple[ImageRole, int]] = set()
        for index, entry in enumerate(self.images):
            if entry.role not in MASK_ROLES:
                continue
            assert entry.style is not None
            region = entry.role is ImageRole.REGION
            where = f"images[{index}] ({'regions' if region else 'style_masks'}[{entry.style}])"  # the client's names
            if entry.style >= len(styles):
                raise invalid(f"{where}: there are only {len(styles)} style images, so style must be "
                              f"from 0 to {len(styles) - 1}")
            if (entry.role, entry.style) in seen:
                raise invalid(f"{where}: a second {entry.role.value} for style {entry.style}")
            seen.add((entry.role, entry.style))
            target = self.images[contents[0] if region else styles[entry.style]].spec
            if entry.spec.channels != 1:
                raise invalid(f"{where} must have 1 channel (grey), got {entry.spec.channels}")
            if (entry.spec.width, entry.spec.height) != (target.width, target.height):
                raise invalid(f"{where} is {entry.spec.width}×{entry.spec.height} but must be the size of "
                              f"{'the content' if region else f'style image {entry.style}'}, "
                              f"{target.width}×{target.height}")


@dataclass(frozen=True)
class Frame(WireRecord):
    """The next frame of a sequence job, its pixels as the one binary part."""

    job_id: str = _doc("the sequence job")
    index: int = _doc("the frame's number: 2, 3, … in order (the submit's content is frame 1)", low=2,
                      high=MAX_SEQUENCE_FRAMES)
    image: ImageSpec = _doc("`{width, height, channels, dtype}` of the frame: the first frame's width and height")

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], max_side: int = MAX_IMAGE_SIDE, max_pixels: int | None = None) -> Frame:
        _known(body, cls, "frame")
        return cls(**_read(cls, body, "frame: ", max_side=max_side, max_pixels=max_pixels))


@dataclass(frozen=True)
class Accepted(WireRecord):
    """The job is queued."""

    job_id: str = _doc("the new job's id")
    position: int = _doc("its place in the queue (0: next)")


@dataclass(frozen=True)
class JobProgress(WireRecord):
    """One iteration of a job (the ``progress`` body; ``preview`` adds the current image)."""

    job_id: str = _doc("the job")
    stage: int = _doc("the coarse-to-fine stage, from 1", high=1 << 40)
    stages: int = _doc("how many stages", high=1 << 40)
    iteration: int = _doc("iteration over all stages, from 1", high=1 << 40)
    total_iterations: int = _doc("iterations over all stages", high=1 << 40)
    width: int = _doc("this stage's image width", high=1 << 40)
    height: int = _doc("this stage's image height", high=1 << 40)
    losses: dict[str, float] = _doc("`{content, style, tv, total}`: the weighted loss terms",
                                    names=("content", "style", "tv", "total"))
    elapsed_s: float = _doc("seconds since the job started running")
    stage_iteration: int = _doc("iteration within the stage, from 1", default=0, high=1 << 40)
    stage_iterations: int = _doc("iterations of the stage", default=0, high=1 << 40)
    frame: int = _optional("a sequence's frame being stylised, from 1 (the counts above are within it)", default=1,
                           high=MAX_SEQUENCE_FRAMES)
    frames: int = _optional("a sequence's frames", default=1, high=MAX_SEQUENCE_FRAMES)
    preview: Image | None = field(default=None, metadata={"wire": False})  # the preview's pixels, not in the body

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> JobProgress:
        _known(body, cls, "progress", also=frozenset({"image"}))  # a preview's body is read as a progress too
        return cls(**_read(cls, body))


@dataclass(frozen=True)
class Preview(WireRecord):
    """``progress``'s fields plus ``image``, the spec of the current image (its one binary part)."""

    progress: JobProgress = _doc("as `progress`", flatten=True)
    image: ImageSpec = _doc("`{width, height, channels, dtype}` of the current image: RGB in the submit's "
                            "`result_dtype`")

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Preview:
        return cls(JobProgress.from_wire(body), ImageSpec.from_wire(body.get("image"), "image"))


@dataclass(frozen=True)
class Result(WireRecord):
    """The stylised image of a job that finished."""

    job_id: str = _doc("the job")
    image: ImageSpec = _doc("`{width, height, channels, dtype}` of the result (its one binary part): RGB in the "
                            "submit's `result_dtype`")
    elapsed_s: float = _doc("seconds the job ran", missing=0.0)
    frame: int | None = _optional("a sequence's frame, from 1: one result per frame, in order; the job ends with "
                                  "its last", high=MAX_SEQUENCE_FRAMES)


@dataclass(frozen=True)
class Error(WireRecord):
    """A refused request, or a job that failed or was cancelled."""

    code: ErrorCode = _doc("for programs: " + ", ".join(f"`{code.value}`" for code in ErrorCode))
    message: str = _doc("for people: one line, fit to show to a user")
    job_id: str | None = _optional("the job it ends, for a job's error")
    largest_size: int | None = _optional("with `out_of_memory`: the longest side that should fit")
    request: str | None = _optional("the type of the request it answers, for a refused request")

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Error:
        """Lenient: an error is reported whatever else is wrong with it (an unknown code reads as internal)."""
        values: dict[str, Any] = {"code": ErrorCode.INTERNAL, "message": "The daemon reported an error."}
        for item, kind in _wire_fields(cls):
            with contextlib.suppress(ProtocolError):  # a bad field keeps its default
                values[item.name] = _value(kind, body.get(item.name), item.name, item.metadata, {})
        return cls(**values)

    @classmethod
    def of(cls, error: ProtocolError, request: MessageType | None = None) -> Error:
        return cls(error.code, str(error), request=None if request is None else request.value)


@dataclass(frozen=True)
class StatusReply(WireRecord):
    """The daemon's state as the asking client may see it (other clients' jobs are counted, not named)."""

    version: str = _doc("the daemon's software version")
    protocol_version: int = _doc("its protocol version")
    pid: int = _doc("its process id")
    endpoint: str = _doc("where it listens")
    transport: str = _doc("`ipc` or `tcp+curve`")
    uptime_s: float = _doc("seconds since it started")
    queue: list[str | None] = _doc("queued jobs in order: the asking client's by id, other clients' as null")
    queue_capacity: int = _doc("queued jobs beyond which a submit is `busy`")
    jobs_done: int = _doc("jobs finished since start")
    devices: list[dict[str, Any]] = _doc(
        "one entry per device's worker, in the order jobs go to them: `index`, `device` (e.g. `cpu`, `cuda:0`), "
        "`name` (the GPU's model on CUDA), `model` (`not_loaded`, `loading`, `loaded` or `failed`), `model_error` "
        "(why loading failed, or null), `precision` (`{auto, reason}`: what a job's `auto` precision runs in there, "
        "and why), `memory` (`available_bytes`; on CUDA `total_bytes`, `allocated_bytes`), `running` (`{job_id, "
        "progress}`, both null for another client's job, or null when idle), `jobs_done`, `style_cache_entries` (as "
        "in `style_cache`)")
    style_cache: dict[str, int] = _doc(
        "`{hits, misses, entries, bytes}` of the style Gram caches: an invited client's own (its jobs find only "
        "the targets its own jobs computed), all clients' for the daemon's own user")
    kept_results: int = _doc("results kept for warm starts")
    memory: dict[str, Any] = _doc(
        "`rss_bytes`; on CUDA `cuda_allocated_bytes`, `cuda_max_allocated_bytes` (summed over the GPUs); "
        "`available_bytes` (the memory budget or what the next job's device has free); `largest_size` and "
        "`largest_whole_size`, maps from optimiser to the longest side of the largest square image that runs now, "
        "in tiles where needed or whole")
    seconds_per_megapixel_iteration: float | None = _doc(
        "measured seconds of one optimiser iteration per megapixel on the next job's device, beside its fixed part: a "
        "running fit over the jobs run so far, null before the first")
    seconds_per_iteration: float | None = _doc(
        "the fixed part of an optimiser iteration's seconds, whatever the size (0 until jobs of two sizes have "
        "run), null before the first job")
    versions: dict[str, str] = _doc("versions of Python, torch, torchvision, pyzmq, libzmq, msgpack")
    ray: dict[str, Any] | None = _optional(
        "with `serve --ray`: `{address, workers}`, each worker `{node, device, pid, state, running, jobs_done}`: "
        "`pid` its actor's process, `state` `ready`, `starting` or `dead`, `running` the asking client's job id, "
        "`\"\"` for another client's, or null; null without `--ray`", always_sent=True)

    def running(self) -> list[dict[str, Any]]:
        """The jobs running now, one per busy device: ``{job_id, progress}`` (both null for another client's)."""
        return [device["running"] for device in self.devices if device["running"] is not None]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> StatusReply:
        """Every field must be there but the optional ones; the values are taken as sent."""
        fields_ = _wire_fields(cls)
        missing = [item.name for item, _ in fields_ if item.name not in body and not item.metadata.get("optional")]
        if missing:
            raise invalid(f"status_reply: missing field {missing[0]}")
        return cls(**{item.name: body[item.name] for item, _ in fields_ if item.name in body})


@dataclass(frozen=True)
class Estimate(WireRecord):
    """What a job would cost, from its settings and sizes alone (no pixels)."""

    width: int = _doc("the content's width", low=1, high=_MAX_SIDE)
    height: int = _doc("the content's height", low=1, high=_MAX_SIDE)
    settings: dict[str, Any] = _optional("the job's settings, as in `submit`", factory=dict, always_sent=True,
                                         check=validate_settings)
    style_sizes: tuple[tuple[int, int], ...] = _optional(
        "`[[width, height], ...]`, one per style image", default=(), always_sent=True,
        wire_type="list of [width, height]", low=1, high=_MAX_SIDE, count=(0, MAX_STYLES),
        listing=f"at most {MAX_STYLES} [width, height] pairs")

    @classmethod
    def from_wire(cls, body: Mapping[str, Any], max_side: int = MAX_IMAGE_SIDE) -> Estimate:
        _known(body, cls, "estimate")
        return cls(**_read(cls, body, "estimate: ", max_side=max_side))


@dataclass(frozen=True)
class EstimateReply(WireRecord):
    """What the job would cost now, on the daemon's device with the memory it has."""

    memory_bytes: int = _doc("peak memory of the largest stage, by the engine's memory model (nst_engine/memory.py)",
                             high=1 << 62)
    available_bytes: int = _doc("the memory a job may use now (the budget, or what the device has free)", high=1 << 62)
    tiled: bool = _doc("whether some stage runs in tiles")
    tiles: int = _doc("tiles per evaluation at the final stage (1: whole, or one tile over all of it)", low=1)
    lbfgs_history: int = _doc("the L-BFGS history the final stage keeps: 50, shorter where memory is short")
    iterations: int = _doc("optimiser iterations over all stages", high=1 << 40)
    seconds: float | None = _doc("expected running time, from the daemon's measured seconds per iteration and "
                                 "per megapixel-iteration (status's `seconds_per_iteration` and "
                                 "`seconds_per_megapixel_iteration`); null until it has run a job")
    runnable: bool = _doc("whether it can run now (else a submit fails with `out_of_memory`)")
    largest_size: int = _doc("the longest side of the largest output of this shape that can run now")
    output_width: int = _doc("the result's width", low=1)
    output_height: int = _doc("the result's height", low=1)


# -- The message table -------------------------------------------------------------------------------
class Origin(str, enum.Enum):
    CLIENT = "client"
    DAEMON = "daemon"


@dataclass(frozen=True)
class MessageKind:
    type: MessageType
    record: type
    sender: Origin
    answer: str  # what answers it (requests) or when it is sent (the daemon's messages)


MESSAGES: dict[MessageType, MessageKind] = {kind.type: kind for kind in (
    MessageKind(MessageType.HELLO, Hello, Origin.CLIENT, "`welcome`, or `error` `version_mismatch`"),
    MessageKind(MessageType.PING, Empty, Origin.CLIENT, "`pong`"),
    MessageKind(MessageType.HEARTBEAT, Empty, Origin.CLIENT,
                "`pong` (sent every 0.5 s while the client waits for a job; the daemon cancels the jobs of a "
                "client silent for 1.5 s)"),
    MessageKind(MessageType.STATUS, Empty, Origin.CLIENT, "`status_reply`"),
    MessageKind(MessageType.ESTIMATE, Estimate, Origin.CLIENT, "`estimate_reply`"),
    MessageKind(MessageType.SUBMIT, Submit, Origin.CLIENT,
                "`accepted`, then `progress`/`preview`…, then `result` (a sequence's: one per frame) or the job's "
                "`error`"),
    MessageKind(MessageType.FRAME, Frame, Origin.CLIENT,
                "nothing: its `result` comes in turn; a frame that does not fit its sequence ends the job with "
                "`error` `invalid_request`"),
    MessageKind(MessageType.CANCEL, Cancel, Origin.CLIENT,
                "the job's `error` with code `cancelled`; `invalid_request` for a job of another client"),
    MessageKind(MessageType.SHUTDOWN, Empty, Origin.CLIENT, "`shutting_down`, then the daemon exits"),
    MessageKind(MessageType.WELCOME, Welcome, Origin.DAEMON, "answers `hello`"),
    MessageKind(MessageType.PONG, Empty, Origin.DAEMON, "answers `ping` and `heartbeat`"),
    MessageKind(MessageType.STATUS_REPLY, StatusReply, Origin.DAEMON, "answers `status`"),
    MessageKind(MessageType.ESTIMATE_REPLY, EstimateReply, Origin.DAEMON, "answers `estimate`"),
    MessageKind(MessageType.ACCEPTED, Accepted, Origin.DAEMON, "answers `submit`"),
    MessageKind(MessageType.PROGRESS, JobProgress, Origin.DAEMON, "every `progress_every` iterations of a job"),
    MessageKind(MessageType.PREVIEW, Preview, Origin.DAEMON,
                "every `preview_every` iterations, with the current image as its one binary part"),
    MessageKind(MessageType.RESULT, Result, Origin.DAEMON, "a job's end, with the result as its one binary part"),
    MessageKind(MessageType.ERROR, Error, Origin.DAEMON, "a refused request, or a job's end"),
    MessageKind(MessageType.SHUTTING_DOWN, Empty, Origin.DAEMON, "answers `shutdown`"),
)}
assert set(MESSAGES) == set(MessageType), "every message type has a record"
