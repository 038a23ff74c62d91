"""Golden vectors and edge cases of the guest wire codec (docs/guest-protocol.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from steelcup.errors import GuestProtocolError
from steelcup.guest import protocol as p

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "guest_protocol.txt"


@dataclass
class Vector:
    name: str
    raw: bytes
    op: int | None = None
    id: int | None = None
    fields: list[tuple[int, bytes]] = field(default_factory=list)
    data: bytes | None = None
    reason: str = ""


def load_vectors() -> tuple[list[Vector], list[Vector]]:
    good: list[Vector] = []
    bad: list[Vector] = []
    current: Vector | None = None
    for lineno, line in enumerate(GOLDEN.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split(" ", 3)
        kind = words[0]
        if kind == "frame":
            current = Vector(words[1], bytes.fromhex(words[2]))
            good.append(current)
        elif kind == "bad":
            current = None
            bad.append(Vector(words[1], bytes.fromhex(words[2]), reason=" ".join(words[3:])))
        else:
            assert current is not None, f"{GOLDEN}:{lineno}: attribute outside a frame"
            if kind == "op":
                current.op = int(words[1])
            elif kind == "id":
                current.id = int(words[1])
            elif kind == "field":
                value = words[2] if len(words) > 2 else ""
                current.fields.append((int(words[1]), bytes.fromhex(value)))
            elif kind == "data":
                current.data = bytes.fromhex(words[1] if len(words) > 1 else "")
            else:
                raise AssertionError(f"{GOLDEN}:{lineno}: unknown line kind {kind!r}")
    return good, bad


if GOLDEN.exists():
    GOOD, BAD = load_vectors()
else:  # pragma: no cover - the guest side ships the file
    GOOD, BAD = [], []


def test_golden_file_present_and_nonempty() -> None:
    assert GOLDEN.exists(), "tests/golden/guest_protocol.txt is missing"
    assert len(GOOD) > 10 and len(BAD) > 5


@pytest.mark.parametrize("vec", GOOD, ids=[v.name for v in GOOD])
def test_golden_frame_decodes_and_reencodes(vec: Vector) -> None:
    frame = p.decode_frame(vec.raw)
    assert frame.op == vec.op
    assert frame.id == vec.id
    if frame.is_data:
        assert vec.fields == []
        assert frame.payload == (vec.data or b"")
        assert p.encode_frame(frame) == vec.raw
    else:
        assert vec.data is None
        assert frame.fields() == vec.fields
        # re-encode from the decoded fields
        rebuilt = p.encode_frame(p.Frame(frame.op, frame.id, 0, p.encode_fields(vec.fields)))
        assert rebuilt == vec.raw
    # the incremental decoder sees the same frame, also when fed a byte at a time
    dec = p.FrameDecoder()
    out: list[p.Frame] = []
    for b in vec.raw:
        out += dec.feed(bytes([b]))
    assert out == [frame]
    assert dec.buffered == 0


@pytest.mark.parametrize("vec", BAD, ids=[v.name for v in BAD])
def test_golden_bad_is_rejected(vec: Vector) -> None:
    with pytest.raises(GuestProtocolError):
        p.decode_frame(vec.raw)


def test_incremental_decoder_rejects_header_errors_early() -> None:
    by_name = {v.name: v for v in BAD}
    for name in ("wrong_magic", "length_over_cap", "data_over_64k"):
        if name not in by_name:
            continue
        dec = p.FrameDecoder()
        with pytest.raises(GuestProtocolError):
            dec.feed(by_name[name].raw[: p.HEADER_SIZE])


def test_decoder_handles_many_frames_in_one_chunk() -> None:
    frames = [
        p.Frame(p.Op.STDOUT, 5, 0, b"x" * 1000),
        p.Frame(p.Op.OK, 2, 0, p.encode_fields([(p.Tag.PID, 123)])),
        p.Frame(p.Op.EXIT, 5, 0, p.encode_fields([(p.Tag.STATUS, -1), (p.Tag.SIGNAL, 0)])),
    ]
    blob = b"".join(p.encode_frame(f) for f in frames)
    dec = p.FrameDecoder()
    got = dec.feed(blob[:20]) + dec.feed(blob[20:1030]) + dec.feed(blob[1030:])
    assert got == frames
    assert p.get_i32(got[2].fields(), p.Tag.STATUS) == -1


def test_typed_getters_last_wins_and_repeats_keep_order() -> None:
    payload = p.encode_fields(
        [
            (p.Tag.HOSTNAME, "a"),
            (p.Tag.ARG, "sh"),
            (p.Tag.ARG, b"-c"),
            (p.Tag.HOSTNAME, "b"),
            (p.Tag.UID, 1000),
            (999, b"\x00\x01"),
        ]
    )
    fields = p.decode_fields(payload)
    assert p.get_str(fields, p.Tag.HOSTNAME) == "b"
    assert p.get_all(fields, p.Tag.ARG) == [b"sh", b"-c"]
    assert p.get_u32(fields, p.Tag.UID) == 1000
    assert p.get_u32(fields, p.Tag.GID) is None
    assert p.get_u32(fields, p.Tag.GID, 7) == 7
    assert (999, b"\x00\x01") in fields
    with pytest.raises(GuestProtocolError):
        p.require_u32(fields, p.Tag.PID)


@pytest.mark.parametrize(
    "fields",
    [
        [(p.Tag.ARG, "a\0b")],
        [(p.Tag.ARG, "x" * (p.MAX_STRING_BYTES + 1))],
        [(p.Tag.UID, -1)],
        [(p.Tag.UID, 1 << 32)],
        [(p.Tag.STATUS, 1 << 31)],
        [(p.Tag.UID, b"\x01\x02")],
        [(p.Tag.CAPS, -1)],
        [(p.Tag.CAPS, 1 << 64)],
        [(p.Tag.CAPS, b"\x01\x00\x00\x00")],
        [(p.Tag.ARG, 5)],
        [(p.Tag.ENV, "A=1")] * (p.MAX_FIELDS + 1),
    ],
)
def test_encoder_refuses_what_the_guest_would_reject(
    fields: list[tuple[p.Tag, p.FieldValue]],
) -> None:
    with pytest.raises(GuestProtocolError):
        p.encode_fields(fields)


def test_encoder_caps_payloads() -> None:
    with pytest.raises(GuestProtocolError):
        p.encode_frame(p.Frame(p.Op.STDIN, 1, 0, b"x" * (p.MAX_DATA_BYTES + 1)))
    assert len(p.encode_frame(p.Frame(p.Op.STDIN, 1, 0, b"x" * p.MAX_DATA_BYTES))) == (
        p.HEADER_SIZE + p.MAX_DATA_BYTES
    )
    with pytest.raises(GuestProtocolError):
        p.encode_frame(p.Frame(p.Op.START, 1, 0, b"x" * (p.MAX_PAYLOAD_BYTES + 1)))


def test_constants_match_spec() -> None:
    assert p.MAGIC_BYTES == b"scup"
    assert p.MAX_PAYLOAD_BYTES == 1048576
    assert p.INITIAL_CREDIT_BYTES == 262144
    assert struct.calcsize("<IHHII") == p.HEADER_SIZE
    assert [op.value for op in p.Op] == list(range(1, 25))
    assert [tag.value for tag in p.Tag] == list(range(1, 52))


def test_u64_field_round_trips_past_32_bits() -> None:
    every = (1 << 41) - 1
    fields = p.decode_fields(p.encode_fields([(p.Tag.CAPS, 1), (p.Tag.CAPS, every)]))
    assert fields[-1] == (p.Tag.CAPS, every.to_bytes(8, "little"))
    assert p.get_u64(fields, p.Tag.CAPS) == every  # last one wins
    assert p.get_u64(fields, p.Tag.UID) is None
