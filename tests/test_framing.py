"""Record framing and the chunk reader: no record is ever split, nothing lost or added."""
from __future__ import annotations

import random

import pytest

from dataflow.errors import RecordTooLongError
from dataflow.framing import Framer, RecordTooLong
from dataflow.sources import ChunkReader


class BytesSource:
    """A Readable over bytes that returns at most `step` bytes per read (1: byte at a time)."""

    def __init__(self, data: bytes, step: int | None = None):
        self.data = data
        self.pos = 0
        self.step = step

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), len(self.data) - self.pos, self.step or len(buf))
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n

    def where(self, offset: int) -> str:
        return f"test.log: byte {offset}"


def chunks_of(data: bytes, *, slot: int, chunk: int | None = None, delimiter=b"\n",
              step: int | None = None) -> list[bytes]:
    buf = bytearray(slot)
    reader = ChunkReader(BytesSource(data, step), framer=Framer(delimiter),
                         chunk_size=chunk or slot, max_record_size=slot)
    out = []
    offsets = []
    while True:
        offsets.append(reader.offset)
        n = reader.fill(buf, 0, memoryview(buf))
        if n == 0:
            break
        out.append(bytes(buf[:n]))
    assert offsets[:-1] == [sum(map(len, out[:i])) for i in range(len(out))]
    return out


CASES = {
    "empty": b"",
    "one line": b"hello\n",
    "no final newline": b"a\nbb\nccc",
    "crlf": b"GET /\r\nPOST /x\r\n\r\nlast\r\n",
    "lone cr is data": b"a\rb\rc\nd\re\n",
    "blank lines": b"\n\n\n",
    "nul and invalid utf8": b"\x00\xff\xfe\n\x00\n\xc3(\n",
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("slot", [9, 10, 16, 4096])  # >= the longest record
@pytest.mark.parametrize("step", [None, 1, 3])
def test_chunks_are_whole_records_and_join_to_the_input(name, slot, step):
    data = CASES[name]
    chunks = chunks_of(data, slot=slot, step=step)
    assert b"".join(chunks) == data
    for c in chunks[:-1]:
        assert c.endswith(b"\n"), c
    assert all(chunks), "no empty chunk"


def test_random_lines_straddling_chunk_edges():
    rng = random.Random(5)
    lines = [bytes(rng.choice(b"abc \r\x00") for _ in range(rng.randrange(0, 30))) + b"\n"
             for _ in range(2000)]
    data = b"".join(lines)
    for slot in (31, 32, 33, 100, 1000):
        for step in (None, 1, 7):
            chunks = chunks_of(data, slot=slot, step=step)
            assert b"".join(chunks) == data
            assert all(c.endswith(b"\n") for c in chunks)
            # every record is whole: the chunks' records are exactly the input's records
            assert [r for c in chunks for r in c.split(b"\n")[:-1]] == data.split(b"\n")[:-1]


def test_a_record_exactly_the_slot_size_fits():
    data = b"x" * 15 + b"\n" + b"y" * 15 + b"\n"
    assert chunks_of(data, slot=16) == [b"x" * 15 + b"\n", b"y" * 15 + b"\n"]


def test_chunk_size_smaller_than_slot_reads_on_until_a_record_ends():
    data = b"short\n" + b"z" * 40 + b"\n" + b"end\n"
    chunks = chunks_of(data, slot=64, chunk=8)
    assert b"".join(chunks) == data
    assert b"z" * 40 + b"\n" in b"".join(chunks)
    assert all(c.endswith(b"\n") for c in chunks)


def test_multibyte_delimiter():
    data = b"a\x00\x00bb\x00\x00ccc\x00\x00"
    chunks = chunks_of(data, slot=6, delimiter=b"\x00\x00", step=1)
    assert b"".join(chunks) == data
    assert all(c.endswith(b"\x00\x00") for c in chunks)


def test_byte_framing_cuts_anywhere():
    data = bytes(range(256)) * 3
    chunks = chunks_of(data, slot=100, delimiter=None)
    assert [len(c) for c in chunks] == [100] * 7 + [68]
    assert b"".join(chunks) == data


def test_a_record_longer_than_the_slot_names_the_file_and_offset():
    data = b"ok\n" * 5 + b"x" * 50 + b"\n"
    with pytest.raises(RecordTooLongError) as e:
        chunks_of(data, slot=16)
    assert e.value.offset == 15
    assert "test.log: byte 15" in str(e.value)
    assert "max_record_size" in str(e.value)


def test_framer_asks_for_more_before_the_buffer_is_full():
    f = Framer(b"\n")
    assert f.cut(b"abc", 0, 3, capacity=10, eof=False) == 0
    assert f.cut(b"abc", 0, 3, capacity=10, eof=True) == 3
    assert f.cut(b"xxab\ncd", 2, 5, capacity=10, eof=False) == 3
    with pytest.raises(RecordTooLong):
        f.cut(b"abcd", 0, 4, capacity=4, eof=False)
