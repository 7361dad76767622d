import os
import random
import zlib

from hypothesis import given, settings, strategies as st

from dataflow.checksums import adler32_combine, crc32_combine


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32_combine_matches_crc_of_the_joined_bytes(a, b):
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_adler32_combine_matches_adler_of_the_joined_bytes(a, b):
    assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 5 << 20), min_size=1, max_size=6), st.integers(0, 2**32))
def test_combining_random_splits_of_a_large_buffer_in_order(cuts, seed):
    data = random.Random(seed).randbytes(6 << 20)
    edges = sorted({0, len(data), *(c % len(data) for c in cuts)})
    crc, adler = 0, 1
    for lo, hi in zip(edges, edges[1:]):
        piece = data[lo:hi]
        crc = crc32_combine(crc, zlib.crc32(piece), len(piece))
        adler = adler32_combine(adler, zlib.adler32(piece), len(piece))
    assert crc == zlib.crc32(data)
    assert adler == zlib.adler32(data)


def test_lengths_beyond_32_bits_and_adler_sums_that_wrap():
    # the combination only depends on len2 through x^(8 len2) mod P (period 2^32 - 1 at most)
    # and len2 mod 65521: check a length that overflows 32 bits against the period
    piece = os.urandom(1000)
    crc = zlib.crc32(piece)
    assert crc32_combine(0, crc, len(piece)) == crc
    big = (1 << 40) + 12345
    assert crc32_combine(crc, 0, big) != crc32_combine(crc, 0, big + 1)
    ff = b"\xff" * 70000
    assert adler32_combine(zlib.adler32(ff), zlib.adler32(ff), len(ff)) == zlib.adler32(ff + ff)


def test_negative_length_is_refused():
    import pytest

    with pytest.raises(ValueError):
        crc32_combine(0, 0, -1)
    with pytest.raises(ValueError):
        adler32_combine(1, 1, -1)
