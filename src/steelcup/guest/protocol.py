"""Pure codec for the host<->guest wire protocol (docs/guest-protocol.md, version 1).

No I/O here: frames and fields to bytes and back, plus an incremental decoder for a byte stream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from steelcup.errors import GuestProtocolError, InvalidArgument

PROTOCOL_VERSION = 1
MAGIC = 0x70756373  # the bytes b"scup" little-endian
MAGIC_BYTES = struct.pack("<I", MAGIC)
HEADER_SIZE = 16
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB
MAX_FIELDS = 4096
MAX_STRING_BYTES = 65536
MAX_DATA_BYTES = 65536  # payload cap of STDIN/STDOUT/STDERR frames
INITIAL_CREDIT_BYTES = 262144  # per process and direction
EXIT_GRACE_S = 0.5  # guest sends EXIT at most this long after reaping if pipes stay open
FIELD_HEADER_SIZE = 6
INT_FIELD_SIZE = 4
U64_FIELD_SIZE = 8

_HEADER = struct.Struct("<IHHII")
_FIELD_HEADER = struct.Struct("<HI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")


class Op(IntEnum):
    """Opcodes; numbered and append-only."""

    HELLO = 1
    HELLO_OK = 2
    OK = 3
    ERROR = 4
    SETUP_ROOT = 5
    START = 6
    STDIN = 7
    STDOUT = 8
    STDERR = 9
    CLOSE_STDIN = 10
    CREDIT = 11
    SIGNAL = 12
    RESIZE = 13
    EXIT = 14
    POWEROFF = 15
    PING = 16
    NET_CONFIG = 17
    MOUNT = 18
    FIXUP = 19
    STAGE_ROOT = 20
    SYSCTL = 21
    RESUME = 22
    SYNC_ROOT = 23
    STAGE_LOWER = 24


class RootfsCache(IntEnum):
    """SETUP_ROOT's CACHE: how the guest caches the container root's 9p share."""

    NONE = 0  # every access goes to the host: coherent with files the host writes
    LOOSE = 1  # page, dentry and attribute caches; the host syncs and drops them (SYNC_ROOT)
    # Copied into a tmpfs in guest RAM, the share unmounted: a checkpointable container's root
    # (QEMU refuses to migrate a VM with a 9p share mounted). Not a daemon-wide mode.
    RAM = 2
    # The image's files as erofs on the VM's root disk, the container's writable layer the
    # share's upper/ and work/ (cache=mmap), an overlay of the two in the guest.
    BLOCK = 3

    @classmethod
    def from_name(cls, name: str) -> RootfsCache:
        """"none", "loose" or "block" (the daemon's --rootfs-cache; with block, a container
        whose image has no erofs image yet when it is created is loose)."""
        try:
            mode = cls[name.upper()]
            if mode is cls.RAM:  # a checkpointable container's, never daemon-wide
                raise KeyError(name)
            return mode
        except KeyError:
            raise InvalidArgument(f"unknown root cache mode {name!r}: none, loose or block"
                                  ) from None


# Where STAGE_ROOT mounts its share in the guest (processes started before SETUP_ROOT see it).
STAGED_SHARE_PATH = "/run/share"


class Tag(IntEnum):
    """Field tags; numbered and append-only."""

    VERSION = 1
    KERNEL = 2
    INIT_VERSION = 3
    ERRNO = 4
    MESSAGE = 5
    PID = 6
    SOURCE = 7
    HOSTNAME = 8
    ARG = 9
    ENV = 10
    CWD = 11
    UID = 12
    GID = 13
    GROUP = 14
    TTY = 15
    ROWS = 16
    COLS = 17
    STDIN = 18
    BYTES = 19
    SIGNO = 20
    STATUS = 21
    SIGNAL = 22
    READONLY = 23
    MAIN = 24
    MAC = 25
    ADDRESS = 26
    PREFIX = 27
    GATEWAY = 28
    MTU = 29
    IFNAME = 30
    TARGET = 31
    FSTYPE = 32
    OPTIONS = 33
    REALTIME_S = 34
    REALTIME_NS = 35
    ENTROPY = 36
    CPUS = 37
    SUBDIR = 38
    CAPS = 39
    RLIMIT = 40
    SYSCTL = 41
    PIDS_MAX = 42
    LAST_ID = 43
    PROC = 44
    RECEIVED = 45
    CONTAINER = 46
    CACHE = 47
    DROP = 48
    REHEARSE = 49
    PATH = 50
    STAGED = 51


DATA_OPS = frozenset({Op.STDIN, Op.STDOUT, Op.STDERR})
STRING_TAGS = frozenset(
    {
        Tag.KERNEL,
        Tag.INIT_VERSION,
        Tag.MESSAGE,
        Tag.SOURCE,
        Tag.HOSTNAME,
        Tag.ARG,
        Tag.ENV,
        Tag.CWD,
        Tag.MAC,
        Tag.ADDRESS,
        Tag.GATEWAY,
        Tag.IFNAME,
        Tag.TARGET,
        Tag.FSTYPE,
        Tag.OPTIONS,
        Tag.ENTROPY,
        Tag.SUBDIR,
        Tag.RLIMIT,
        Tag.SYSCTL,
        Tag.PATH,
    }
)
SIGNED_TAGS = frozenset({Tag.STATUS})
U64_TAGS = frozenset({Tag.CAPS, Tag.RECEIVED})
INT_TAGS = frozenset(t for t in Tag if t not in STRING_TAGS and t not in U64_TAGS)  # u32/i32

FieldValue = int | bytes | str
Field = tuple[int, bytes]


@dataclass(frozen=True)
class Frame:
    """One frame. `op` is an int so unknown opcodes survive decoding; `payload` is raw."""

    op: int
    id: int
    flags: int = 0
    payload: bytes = b""

    @property
    def is_data(self) -> bool:
        return self.op in DATA_OPS

    def fields(self) -> list[Field]:
        """The payload decoded as fields (not for data frames)."""
        return decode_fields(self.payload)


# ---- fields -------------------------------------------------------------------------------


def encode_fields(fields: Iterable[tuple[Tag | int, FieldValue]]) -> bytes:
    """Encode (tag, value) pairs: ints as u32 (i32, u64 by tag), str as UTF-8, bytes raw."""
    out = bytearray()
    count = 0
    for tag, value in fields:
        count += 1
        if count > MAX_FIELDS:
            raise GuestProtocolError(f"more than {MAX_FIELDS} fields")
        if not 0 <= tag <= 0xFFFF:
            raise GuestProtocolError(f"tag {tag} out of range")
        raw: bytes
        if isinstance(value, int):
            if tag in STRING_TAGS:
                raise GuestProtocolError(f"tag {tag} is a string field, got int")
            if tag in U64_TAGS:
                if not 0 <= value < (1 << 64):
                    raise GuestProtocolError(f"value {value} out of u64 range for tag {tag}")
                raw = _U64.pack(value)
            elif tag in SIGNED_TAGS:
                if not -(1 << 31) <= value < (1 << 31):
                    raise GuestProtocolError(f"value {value} out of i32 range for tag {tag}")
                raw = _I32.pack(value)
            else:
                if not 0 <= value <= 0xFFFFFFFF:
                    raise GuestProtocolError(f"value {value} out of u32 range for tag {tag}")
                raw = _U32.pack(value)
        else:
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            if tag in INT_TAGS and len(raw) != INT_FIELD_SIZE:
                raise GuestProtocolError(f"tag {tag} is an integer field of 4 bytes")
            if tag in U64_TAGS and len(raw) != U64_FIELD_SIZE:
                raise GuestProtocolError(f"tag {tag} is an integer field of 8 bytes")
            if tag in STRING_TAGS:
                _check_string(tag, raw)
        out += _FIELD_HEADER.pack(tag, len(raw))
        out += raw
    if len(out) > MAX_PAYLOAD_BYTES:
        raise GuestProtocolError(f"payload of {len(out)} bytes over cap {MAX_PAYLOAD_BYTES}")
    return bytes(out)


def _check_string(tag: int, raw: bytes) -> None:
    if len(raw) > MAX_STRING_BYTES:
        raise GuestProtocolError(f"string field {tag} over {MAX_STRING_BYTES} bytes")
    if b"\0" in raw:
        raise GuestProtocolError(f"NUL in string field {tag}")


def decode_fields(payload: bytes) -> list[Field]:
    """Decode a field payload; validates sizes of known tags. Unknown tags are kept raw."""
    fields: list[Field] = []
    view = memoryview(payload)
    pos = 0
    end = len(payload)
    while pos < end:
        if len(fields) >= MAX_FIELDS:
            raise GuestProtocolError(f"more than {MAX_FIELDS} fields")
        if end - pos < FIELD_HEADER_SIZE:
            raise GuestProtocolError("field header truncated")
        tag, length = _FIELD_HEADER.unpack_from(view, pos)
        pos += FIELD_HEADER_SIZE
        if length > end - pos:
            raise GuestProtocolError(f"field {tag} runs past the end of the payload")
        raw = bytes(view[pos : pos + length])
        pos += length
        if tag in INT_TAGS and length != INT_FIELD_SIZE:
            raise GuestProtocolError(f"int field {tag} of wrong size {length}")
        if tag in U64_TAGS and length != U64_FIELD_SIZE:
            raise GuestProtocolError(f"u64 field {tag} of wrong size {length}")
        if tag in STRING_TAGS:
            _check_string(tag, raw)
        fields.append((tag, raw))
    return fields


def _last(fields: Sequence[Field], tag: Tag) -> bytes | None:
    for t, raw in reversed(fields):
        if t == tag:
            return raw
    return None


def get_u32(fields: Sequence[Field], tag: Tag, default: int | None = None) -> int | None:
    """The last value of an unsigned integer field, or `default`."""
    raw = _last(fields, tag)
    if raw is None:
        return default
    if len(raw) != INT_FIELD_SIZE:
        raise GuestProtocolError(f"int field {tag.name} of wrong size {len(raw)}")
    return int(_U32.unpack(raw)[0])


def get_u64(fields: Sequence[Field], tag: Tag, default: int | None = None) -> int | None:
    """The last value of a 64-bit unsigned integer field, or `default`."""
    raw = _last(fields, tag)
    if raw is None:
        return default
    if len(raw) != U64_FIELD_SIZE:
        raise GuestProtocolError(f"u64 field {tag.name} of wrong size {len(raw)}")
    return int(_U64.unpack(raw)[0])


def get_i32(fields: Sequence[Field], tag: Tag, default: int | None = None) -> int | None:
    """The last value of a signed integer field, or `default`."""
    raw = _last(fields, tag)
    if raw is None:
        return default
    if len(raw) != INT_FIELD_SIZE:
        raise GuestProtocolError(f"int field {tag.name} of wrong size {len(raw)}")
    return int(_I32.unpack(raw)[0])


def get_bytes(fields: Sequence[Field], tag: Tag, default: bytes | None = None) -> bytes | None:
    """The last value of a field as raw bytes, or `default`."""
    raw = _last(fields, tag)
    return default if raw is None else raw


def get_str(fields: Sequence[Field], tag: Tag, default: str | None = None) -> str | None:
    """The last value of a string field, decoded as UTF-8 (invalid bytes replaced)."""
    raw = _last(fields, tag)
    return default if raw is None else raw.decode("utf-8", errors="replace")


def get_all(fields: Sequence[Field], tag: Tag) -> list[bytes]:
    """Every value of a repeated field, in wire order."""
    return [raw for t, raw in fields if t == tag]


def require_u32(fields: Sequence[Field], tag: Tag) -> int:
    value = get_u32(fields, tag)
    if value is None:
        raise GuestProtocolError(f"missing field {tag.name}")
    return value


def require_i32(fields: Sequence[Field], tag: Tag) -> int:
    value = get_i32(fields, tag)
    if value is None:
        raise GuestProtocolError(f"missing field {tag.name}")
    return value


# ---- frames -------------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    """Serialize a frame; enforces the payload caps."""
    cap = MAX_DATA_BYTES if frame.op in DATA_OPS else MAX_PAYLOAD_BYTES
    if len(frame.payload) > cap:
        raise GuestProtocolError(f"payload of {len(frame.payload)} bytes over cap {cap}")
    if not 0 <= frame.op <= 0xFFFF or not 0 <= frame.flags <= 0xFFFF:
        raise GuestProtocolError("opcode or flags out of range")
    if not 0 <= frame.id <= 0xFFFFFFFF:
        raise GuestProtocolError(f"id {frame.id} out of range")
    return _HEADER.pack(MAGIC, frame.op, frame.flags, frame.id, len(frame.payload)) + frame.payload


def make_frame(op: Op, id_: int, fields: Iterable[tuple[Tag | int, FieldValue]] = ()) -> bytes:
    """Encode a field-carrying frame in one step."""
    return encode_frame(Frame(op, id_, 0, encode_fields(fields)))


def _parse_header(header: bytes | memoryview) -> tuple[int, int, int, int]:
    magic, op, flags, id_, length = _HEADER.unpack(header)
    if magic != MAGIC:
        raise GuestProtocolError(f"bad magic 0x{magic:08x}")
    if length > MAX_PAYLOAD_BYTES:
        raise GuestProtocolError(f"length over cap: {length} > {MAX_PAYLOAD_BYTES}")
    if op in DATA_OPS and length > MAX_DATA_BYTES:
        raise GuestProtocolError(f"data frame over {MAX_DATA_BYTES} bytes: {length}")
    return op, flags, id_, length


def validate_frame(frame: Frame) -> None:
    """Check a non-data frame's payload parses as fields."""
    if frame.op not in DATA_OPS:
        decode_fields(frame.payload)


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one complete frame (fields validated); anything else is an error."""
    if len(data) < HEADER_SIZE:
        raise GuestProtocolError(f"short header: {len(data)} bytes")
    op, flags, id_, length = _parse_header(data[:HEADER_SIZE])
    if len(data) < HEADER_SIZE + length:
        raise GuestProtocolError("payload shorter than length")
    if len(data) > HEADER_SIZE + length:
        raise GuestProtocolError("bytes after the frame")
    frame = Frame(op, id_, flags, bytes(data[HEADER_SIZE:]))
    validate_frame(frame)
    return frame


class FrameDecoder:
    """Incremental decoder: `feed()` bytes as they arrive, get complete frames back.

    Header errors (bad magic, over-cap length) raise GuestProtocolError; the host treats them as
    fatal, so the decoder does not try to resynchronise. Field payloads are not parsed here.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: tuple[int, int, int, int] | None = None  # parsed header of the pending frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Append `data`; return every frame now complete, in order."""
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._need is None:
                if len(self._buf) < HEADER_SIZE:
                    return frames
                self._need = _parse_header(bytes(self._buf[:HEADER_SIZE]))
            op, flags, id_, length = self._need
            if len(self._buf) < HEADER_SIZE + length:
                return frames
            payload = bytes(self._buf[HEADER_SIZE : HEADER_SIZE + length])
            del self._buf[: HEADER_SIZE + length]
            self._need = None
            frames.append(Frame(op, id_, flags, payload))
