"""Protocol Buffers' binary wire format, read directly from a buffer (a memory-mapped file): the
fields of a message as (number, wire type, value) without a schema, so that a reader decides what
a field means from the message it is in (and, in Caffe's files, from the layer's type), skips
what it does not know, and never copies a length-delimited payload (a blob's packed floats are
viewed in place). https://protobuf.dev/programming-guides/encoding/"""

from __future__ import annotations

import dataclasses

import numpy as np

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = range(6)


class WireError(ValueError):
    """The bytes are not a well-formed message: `offset` is where the reading failed."""

    def __init__(self, why: str, offset: int, past: int | None = None):
        super().__init__(why)
        self.why, self.offset, self.past = why, offset, past  # past: the end a field ran past


@dataclasses.dataclass(frozen=True)
class Span:
    """A length-delimited payload: bytes [start, end) of the buffer."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def read_varint(buffer, offset: int, end: int) -> tuple[int, int]:
    """(value, offset after it) of the varint at `offset`."""
    value, shift, start = 0, 0, offset
    while True:
        if offset >= end:
            raise WireError(f"a varint at byte {start} runs past the end of its message (byte {end})", start, end)
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift >= 70:
            raise WireError(f"a varint at byte {start} is longer than 10 bytes", start)


def fields(buffer, start: int, end: int):
    """Every field of the message in buffer[start:end], in order: (number, wire type, value, offset)
    (see next_field)."""
    offset = start
    while offset < end:
        number, wire, value, after = next_field(buffer, offset, end)
        yield number, wire, value, offset
        offset = after


def next_field(buffer, offset: int, end: int):
    """(number, wire type, value, offset after it) of the field at `offset`: value is an int (VARINT),
    the offset of its 8 or 4 bytes (FIXED64, FIXED32) or a Span (LENGTH). Groups (wire types 3 and
    4, which no Caffe file uses) and bad tags raise WireError."""
    at = offset
    tag, offset = read_varint(buffer, offset, end)
    number, wire = tag >> 3, tag & 7
    if number == 0:
        raise WireError(f"field number 0 at byte {at}", at)
    if wire == VARINT:
        value, offset = read_varint(buffer, offset, end)
    elif wire == FIXED64 or wire == FIXED32:
        value, offset = offset, offset + (8 if wire == FIXED64 else 4)
    elif wire == LENGTH:
        size, offset = read_varint(buffer, offset, end)
        value, offset = Span(offset, offset + size), offset + size
    else:
        raise WireError(f"wire type {wire} (field {number}) at byte {at}", at)
    if offset > end:
        raise WireError(f"field {number} at byte {at} runs past the end of its message (byte {end}) by "
                        f"{offset - end} byte(s)", at, end)
    return number, wire, value, offset


def unpacked_run(buffer, offset: int, end: int, number: int, dtype: str) -> tuple[np.ndarray, int]:
    """(values, offset after them) of the run of unpacked repeated float ('<f4', FIXED32) or double
    ('<f8', FIXED64) fields `number` starting at `offset`: each value carries its own one-byte tag,
    so the run is read as records of 1 + itemsize bytes in one step (a file of millions of
    unpacked floats would take minutes field by field)."""
    itemsize = np.dtype(dtype).itemsize
    tag = (number << 3) | (FIXED32 if itemsize == 4 else FIXED64)
    if tag > 0x7F:
        raise ValueError("unpacked_run reads one-byte tags (field numbers up to 15)")
    width = 1 + itemsize
    records = np.frombuffer(buffer, dtype=np.uint8, count=(end - offset) // width * width, offset=offset)
    records = records.reshape(-1, width)
    others = np.flatnonzero(records[:, 0] != tag)
    count = int(others[0]) if others.size else len(records)
    values = np.ascontiguousarray(records[:count, 1:]).view(dtype).reshape(-1)
    return values, offset + count * width


def text(buffer, span: Span) -> str:
    try:
        return bytes(buffer[span.start:span.end]).decode("utf8")
    except UnicodeDecodeError:
        raise WireError(f"a string at byte {span.start} is not UTF-8", span.start) from None


def signed32(value: int) -> int:
    """An int32 field's value: negative numbers are sign-extended to 64 bits on the wire."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def fixed(buffer, offset: int, dtype: str):
    """The float ('<f4') or double ('<f8') at `offset`."""
    return np.frombuffer(buffer, dtype=dtype, count=1, offset=offset)[0]


def packed_array(buffer, span: Span, dtype: str) -> np.ndarray:
    """A packed repeated float/double field, viewed in place (read-only, no copy)."""
    itemsize = np.dtype(dtype).itemsize
    if span.size % itemsize:
        raise WireError(f"a packed array at byte {span.start} of {span.size} bytes is not a whole number of "
                        f"{itemsize}-byte values", span.start)
    return np.frombuffer(buffer, dtype=dtype, count=span.size // itemsize, offset=span.start)


def packed_varints(buffer, span: Span) -> list[int]:
    values, offset = [], span.start
    while offset < span.end:
        value, offset = read_varint(buffer, offset, span.end)
        values.append(value)
    return values
