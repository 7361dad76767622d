"""The arena: created 0600 and preallocated, mapped by workers without the resource tracker,
unlinked by its owner; stale segments of dead owners are removed, live owners' kept."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from dataflow.shm import PREFIX, SHM_DIR, Arena, remove_stale


def test_create_attach_close_unlinks_only_as_owner():
    a = Arena.create(3, 4096)
    path = os.path.join(SHM_DIR, a.name)
    try:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_size == 3 * 4096 and st.st_blocks * 512 >= 3 * 4096  # really allocated
        assert a.name.startswith(f"{PREFIX}{os.getpid()}-")
        b = Arena.attach(a.name, 3, 4096)
        a.view(2)[:5] = b"hello"
        assert bytes(b.view(2, 5)) == b"hello"
        b.close()
        assert os.path.exists(path), "a worker's close must not unlink the segment"
    finally:
        a.close()
    assert not os.path.exists(path)


def test_remove_stale_deletes_dead_owners_and_keeps_live_ones():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = os.path.join(SHM_DIR, f"{PREFIX}{dead}-00ff00ff00ff00ff")
    live = Arena.create(1, 4096)
    open(stale, "wb").close()
    try:
        removed = remove_stale()
        assert os.path.basename(stale) in removed
        assert not os.path.exists(stale)
        assert os.path.exists(os.path.join(SHM_DIR, live.name))
    finally:
        live.close()
        if os.path.exists(stale):
            os.unlink(stale)


def test_a_signal_while_the_arena_is_reserved_leaves_no_segment(monkeypatch):
    """The reservation takes 10-20 ms: a Ctrl-C's exception raised then (or any other) must
    not leave the half-made segment behind, since nobody holds it yet to unlink it."""
    from dataflow import shm

    def interrupted(fd, offset, length):
        raise KeyboardInterrupt

    before = set(os.listdir(SHM_DIR))
    monkeypatch.setattr(shm.os, "posix_fallocate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Arena.create(4, 1 << 20)
    assert set(os.listdir(SHM_DIR)) == before
