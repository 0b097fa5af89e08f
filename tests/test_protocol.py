"""The wire format in isolation: bounded unpacking before anything else, caps on frames and parts,
validation messages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from daemon.wire.framing import Codec
from daemon.wire.limits import MessageCaps
from daemon.wire.messages import (
    PROTOCOL_VERSION,
    DType,
    ErrorCode,
    ImageSpec,
    MessageType,
    ProtocolError,
    validate_settings,
)

from .daemon_harness import BAD_HEADERS, load_script

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def codec() -> Codec:
    return Codec()


def test_round_trip_with_frames(codec):
    parts = codec.encode(MessageType.SUBMIT, {"a": [1, 2.5, "x"]}, [b"\x00" * 12, b"xy", b""])
    assert len(parts) == 4  # each part one frame where it fits
    message = codec.decode(parts)
    assert message.type is MessageType.SUBMIT and message.body == {"a": [1, 2.5, "x"]}
    assert [bytes(f) for f in message.frames] == [b"\x00" * 12, b"xy", b""]


def test_parts_larger_than_a_frame_travel_as_several_and_are_joined():
    codec = Codec(MessageCaps.for_images(max_frame_bytes=64 * 1024))
    big = bytes(range(256)) * 1000  # 256000 bytes: four frames of 64 KiB
    parts = codec.encode(MessageType.RESULT, {}, [memoryview(big), b"tail"])
    assert [len(part) for part in parts[1:]] == [65536, 65536, 65536, 59392, 4]
    message = codec.decode([bytes(part) for part in parts])
    assert [bytes(f) for f in message.frames] == [big, b"tail"]


def header(**fields) -> bytes:
    base = {"v": PROTOCOL_VERSION, "type": "ping", "body": {}, "parts": []}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ([header(parts=[3])], "frames end before the declared parts"),
        ([header(parts=[3]), b"ab"], "frames end before"),
        ([header(parts=[3]), b"abcd"], "do not make a part of 3 bytes"),
        ([header(parts=[3]), b"ab", b"cd"], "do not make a part of 3 bytes"),
        ([header(parts=[2]), b"ab", b"cd"], "1 frame.s. beyond the declared parts"),
        ([header(parts=[]), b"x"], "beyond the declared parts"),
        ([header(parts=[1] * 48)] + [b"x"] * 48, "at most 47 sizes"),
        ([header(parts=[2**40])], "a binary part of 1099511627776 bytes; the limit is"),
        ([header(parts=[-1])], "a binary part of -1 bytes"),
        ([header(parts=[True])], "a binary part of True bytes"),
        ([header(parts="3")], "parts must list"),
        ([header(parts=[2**30] * 4)], "in all; the limit is"),
        ([], "an empty message"),
    ],
)
def test_parts_that_do_not_add_up_are_refused_before_anything_is_joined(codec, parts, match):
    with pytest.raises(ProtocolError, match=match) as raised:
        codec.decode(parts)
    assert raised.value.code is ErrorCode.INVALID_REQUEST


def test_too_many_frames_are_refused_before_the_header_is_read(codec, monkeypatch):
    def must_not_unpack(*args, **kwargs):
        raise AssertionError("unpacked a message over the frame cap")

    monkeypatch.setattr(msgpack, "unpackb", must_not_unpack)
    with pytest.raises(ProtocolError, match="frames; the limit is"):
        codec.decode([b"h"] * (codec.caps.max_frames + 1))


def test_the_caps_bound_a_message():
    caps = MessageCaps.for_images(512 * 512, max_frame_bytes=256 * 1024)
    assert caps.max_part_bytes == 512 * 512 * 16
    assert caps.max_message_bytes == 3 * 512 * 512 * 16 + 64 * 1024
    assert caps.max_frame_bytes == 256 * 1024 < caps.socket_max_bytes <= 257 * 1024
    assert caps.max_frames == 1 + 47 + -(-caps.max_message_bytes // caps.max_frame_bytes)
    assert MessageCaps.for_images(16).max_frame_bytes == 64 * 1024  # never smaller than a header




@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_malformed_headers_are_invalid_requests(codec, header):
    with pytest.raises(ProtocolError) as raised:
        codec.decode([header])
    assert raised.value.code is ErrorCode.INVALID_REQUEST


def test_a_decode_succeeds_right_after_a_failed_one(codec):
    with pytest.raises(ProtocolError):
        codec.decode([b"\x91" * 1100 + b"\xc0"])
    assert codec.decode(codec.encode(MessageType.PING)).type is MessageType.PING


@pytest.mark.parametrize(
    ("fields", "code", "match"),
    [
        ({"v": 99}, ErrorCode.VERSION_MISMATCH, "version 99"),
        ({"v": ...}, ErrorCode.VERSION_MISMATCH, "version None"),
        ({"type": "teleport"}, ErrorCode.INVALID_REQUEST, "unknown message type"),
        ({"type": ...}, ErrorCode.INVALID_REQUEST, "unknown message type"),
        ({"body": [1]}, ErrorCode.INVALID_REQUEST, "body must be a map"),
    ],
)
def test_header_fields_are_checked(codec, fields, code, match):
    with pytest.raises(ProtocolError, match=match) as raised:
        codec.decode([header(**fields)])
    assert raised.value.code is code


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"style_weight": float("nan")}, "settings.style_weight must be a finite number"),
        ({"content_weight": -1}, "settings.content_weight must be a finite number"),
        ({"iterations": 2.5}, "settings.iterations must be an integer"),
        ({"iterations": True}, "settings.iterations must be an integer"),
        ({"size": 10**9}, "settings.size"),
        ({"optimizer": "sgd"}, "settings.optimizer must be one of lbfgs, adam"),
        ({"colors": 1}, "settings.colors must be one of style, luminance, histogram"),
        ({"style_blend_weights": [1, -2]}, "settings.style_blend_weights"),
        ({"colour": "blue"}, "settings.colour is not a known setting"),
    ],
)
def test_settings_errors_name_the_field(settings, match):
    with pytest.raises(ProtocolError, match=match):
        validate_settings(settings)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"width": 0, "height": 4, "channels": 3, "dtype": "u8"}, r"img.width must be from 1"),
        ({"width": 4, "height": 10**6, "channels": 3, "dtype": "u8"}, r"img.height must be from 1"),
        ({"width": 9000, "height": 9000, "channels": 3, "dtype": "u8"}, "pixels; the limit"),
        ({"width": 4, "height": 4, "channels": 5, "dtype": "u8"}, "channels must be 1 to 4"),
        ({"width": 4, "height": 4, "channels": 3, "dtype": "f64"}, "dtype must be one of"),
        ({"width": "4", "height": 4, "channels": 3, "dtype": "u8"}, "width must be an integer"),
    ],
)
def test_image_spec_errors_name_the_field(spec, match):
    with pytest.raises(ProtocolError, match=match):
        ImageSpec.from_wire(spec, "img", 16384, 64 * 2**20)


def test_image_spec_byte_length():
    assert ImageSpec(3, 2, 4, DType.F32).nbytes == 96


def test_protocol_and_client_import_no_torch():
    code = ("import sys, daemon.wire.framing, daemon.client.zeromq, daemon.wire.connection, daemon.client.bridge, "
            "daemon.server.lifecycle; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_no_pickle_anywhere():
    for path in [*REPO_ROOT.glob("daemon/**/*.py"), *REPO_ROOT.glob("nst_engine/**/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not any("pickle" in name for name in names), f"{path} imports pickle"
        assert "recv_pyobj" not in path.read_text() and "send_pyobj" not in path.read_text(), path


# ---------------------------------------------------------------------------------------------------
# Message bodies (daemon/wire/messages.py) and their tables in docs/protocol.md
# ---------------------------------------------------------------------------------------------------
def sample_bodies():
    """One instance of each body record, every optional field set."""
    from daemon.wire import messages as m

    spec = ImageSpec(4, 2, 3, DType.F32)
    progress = m.JobProgress("j", 1, 2, 3, 8, 24, 16, {"content": 1.0, "style": 2.0, "tv": 0.0, "total": 3.0},
                             0.5, 3, 4, 2, 3)
    return {
        m.Hello: m.Hello(PROTOCOL_VERSION),
        m.Welcome: m.Welcome(PROTOCOL_VERSION, "0.1.0", 42),
        m.Cancel: m.Cancel("j"),
        m.Submit: m.Submit((m.ImageEntry(m.ImageRole.CONTENT, spec), m.ImageEntry(m.ImageRole.STYLE, spec),
                            m.ImageEntry(m.ImageRole.REGION, ImageSpec(4, 2, 1, DType.U8), 0)),
                           {"size": 16}, 2, 5, "earlier", (8, 4), DType.U16, 32, m.SequencePlan(3, 0.25, 2)),
        m.Frame: m.Frame("j", 2, spec),
        m.Accepted: m.Accepted("j", 0),
        m.JobProgress: progress,
        m.Preview: m.Preview(progress, spec),
        m.Result: m.Result("j", spec, 1.5, 2),
        m.Error: m.Error(ErrorCode.OUT_OF_MEMORY, "no room", "j", 512, "submit"),
        m.StatusReply: m.StatusReply(**dict.fromkeys(m.StatusReply.__dataclass_fields__)),
        m.Estimate: m.Estimate(64, 48, {"size": 32}, ((16, 16),)),
        m.EstimateReply: m.EstimateReply(2**20, 2**30, True, 4, 20, 500, 1.25, True, 2048, 64, 48),
    }


def test_every_body_has_a_record_and_each_round_trips():
    from daemon.wire import messages as m

    samples = sample_bodies()
    assert {kind.record for kind in m.MESSAGES.values()} - {m.Empty} == set(samples)
    for record, sample in samples.items():
        if record is m.StatusReply:
            assert record.from_wire(sample.to_wire()) == sample
            continue
        wire = msgpack.unpackb(msgpack.packb(sample.to_wire()))  # as it travels
        assert record.from_wire(wire) == sample, record.__name__


def test_the_documented_fields_are_the_fields_sent(capsys):
    """docs/protocol.md's tables are generated from the records and up to date, and each record's
    documented fields are exactly the keys its body has on the wire."""
    tables = load_script("docs/message_tables.py")
    assert tables.main(["--check"]) == 0, capsys.readouterr().err
    document = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    for record, sample in sample_bodies().items():
        assert set(tables.field_names(record)) == set(sample.to_wire()), record.__name__
        for name in tables.field_names(record):
            assert f"| `{name}` |" in document, f"{record.__name__}.{name} is not in docs/protocol.md"


def test_fault_injection_is_not_in_the_public_schema():
    from daemon.wire import messages as m

    tables = load_script("docs/message_tables.py")
    assert "fault" not in tables.field_names(m.Submit)
    generated = tables.tables()
    assert "`fault`" not in generated and "\"fault\"" not in generated
    document = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert "**Test-only:** a `submit` body may carry `\"fault\"" in document and "--test-faults" in document


def test_heartbeat_is_documented_as_answered_with_pong():
    from daemon.wire import messages as m

    assert "`pong`" in m.MESSAGES[MessageType.HEARTBEAT].answer
    document = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert "| `heartbeat` | `{}` | `pong`" in document


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"images": [{"role": "content", "width": 4, "height": 4, "channels": 3, "dtype": "u8"}]}, "images must list"),
        ({"images": [{"role": "style", "width": 4, "height": 4, "channels": 3, "dtype": "u8"}] * 2},
         "needs one content image"),
        ({"images": [{"role": "content", "width": 4, "height": 4, "channels": 3, "dtype": "u8"},
                     {"role": "style", "width": 4, "height": 4, "channels": 3, "dtype": "u8", "style": 0}]},
         r"images\[1\].style is only for a region or style_mask"),
        ({"images": [{"role": "content", "width": 4, "height": 4, "channels": 3, "dtype": "u8"},
                     {"role": "style", "width": 4, "height": 4, "channels": 3, "dtype": "u8"},
                     {"role": "region", "width": 4, "height": 4, "channels": 1, "dtype": "u8", "style": 0},
                     {"role": "region", "width": 4, "height": 4, "channels": 1, "dtype": "u8", "style": 0}]},
         r"images\[3\] \(regions\[0\]\): a second region for style 0"),
        ({"images": [{"role": "content", "width": 4, "height": 4, "channels": 3, "dtype": "u8"},
                     {"role": "style", "width": 4, "height": 4, "channels": 3, "dtype": "u8"}], "output": {"width": 0}},
         "output.width must be an integer from 1"),
        ({"images": [], "progress_every": 0}, "images must list"),
    ],
)
def test_submit_bodies_are_checked_by_their_record(body, match):
    from daemon.wire.messages import Submit

    with pytest.raises(ProtocolError, match=match):
        Submit.from_wire(body)


def test_a_malformed_error_body_still_reads_as_an_error():
    from daemon.wire.messages import Error

    error = Error.from_wire({"code": "teleported", "message": 3, "largest_size": "big"})
    assert error.code is ErrorCode.INTERNAL and error.message and error.largest_size is None


def test_optional_fields_are_left_out_at_their_default_unless_always_sent():
    """The generic to_wire: optional fields at their default stay off the wire, except those always sent."""
    from daemon.wire import messages as m

    spec = ImageSpec(4, 2, 3, DType.U8)
    submit = m.Submit((m.ImageEntry(m.ImageRole.CONTENT, spec), m.ImageEntry(m.ImageRole.STYLE, spec)))
    entry = {"width": 4, "height": 2, "channels": 3, "dtype": "u8"}
    assert submit.to_wire() == {"images": [{"role": "content", **entry}, {"role": "style", **entry}], "settings": {},
                                "progress_every": 1, "preview_every": 0}
    assert m.Estimate(8, 6).to_wire() == {"width": 8, "height": 6, "settings": {}, "style_sizes": []}
    assert m.Error(ErrorCode.BUSY, "later").to_wire() == {"code": "busy", "message": "later"}
    assert m.Submit.from_wire(submit.to_wire()) == submit
    assert m.Submit.from_wire({"images": submit.to_wire()["images"]}) == submit  # left out: the defaults
    assert m.Result.from_wire({"job_id": "j", "image": entry}).elapsed_s == 0.0


def _changed(record: type, **changes) -> dict:
    body = sample_bodies()[record].to_wire()
    for name, value in changes.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    return body


@pytest.mark.parametrize(
    ("record", "changes", "match"),
    [
        ("Accepted", {"position": True}, "position must be an integer from 0 to 2147483648, got True"),
        ("Welcome", {"pid": -1}, "pid must be an integer from 0 to"),
        ("Welcome", {"pid": ...}, "pid must be an integer from 0 to .*, got None"),
        ("Cancel", {"job_id": 3}, "cancel: job_id must be a string, got 3"),
        ("EstimateReply", {"tiled": 1}, "tiled must be true or false, got 1"),
        ("EstimateReply", {"seconds": float("inf")}, "seconds must be a finite number, got inf"),
        ("JobProgress", {"elapsed_s": "1"}, "elapsed_s must be a finite number"),
        ("JobProgress", {"losses": {"content": 1.0}}, r"losses.style must be a finite number, got None"),
        ("JobProgress", {"losses": [1.0]}, "losses must be a map"),
        ("JobProgress", {"stage_iteration": ...}, "stage_iteration must be an integer"),
        ("JobProgress", {"colour": 1}, "progress: unknown field colour"),
        ("Preview", {"colour": 1}, "unknown field colour"),
        ("Submit", {"result_dtype": "u8"}, "result_dtype must be one of f32, u16, f16, got 'u8'"),
        ("Submit", {"output": [8, 4]}, "output must be a map"),
        ("Submit", {"output": {"width": 8, "height": 10**6}}, "output.height must be an integer from 1 to"),
        ("Submit", {"progress_every": None}, "progress_every must be an integer from 1 to 100000, got None"),
        ("Submit", {"settings": None}, "settings must be a map"),
        ("Submit", {"images": [{"role": "painting"}] * 2}, r"images\[0\].role must be one of content, style"),
        ("Estimate", {"style_sizes": [[4, 4]] * 16}, "estimate: style_sizes must list at most 15"),
        ("Estimate", {"style_sizes": [[4]]}, r"estimate: style_sizes\[0\] must list 2 items"),
        ("Estimate", {"style_sizes": [[4, 0]]}, r"estimate: style_sizes\[0\]\[1\] must be an integer from 1"),
        ("Estimate", {"width": 2.0}, "estimate: width must be an integer"),
        ("Result", {"image": "big"}, "image must be a map"),
        ("Frame", {"index": 1}, "frame: index must be an integer from 2"),
        ("Frame", {"image": {"width": 4, "height": 2, "channels": 3}}, "image.dtype must be one of"),
        ("Submit", {"sequence": {"frames": 1}}, "sequence.frames must be an integer from 2"),
        ("Submit", {"sequence": {"frames": 3, "temporal_weight": -1.0}}, "sequence.temporal_weight must be from 0"),
        ("Submit", {"sequence": {"frames": 3, "speed": 1}}, "sequence: unknown field speed"),
    ],
)
def test_each_kind_of_field_refuses_a_wrong_value(record, changes, match):
    from daemon.wire import messages as m

    with pytest.raises(ProtocolError, match=match) as raised:
        getattr(m, record).from_wire(_changed(getattr(m, record), **changes))
    assert raised.value.code is ErrorCode.INVALID_REQUEST
