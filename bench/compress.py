#!/usr/bin/env python3
"""Benchmark `dataflow compress` / `dataflow decompress` against the standard tools.

    python bench/compress.py [--size 256MiB] [--repeat 3] [--workers 2] [--only gzip,zstd]
                             [--slow-size 64MiB] [--xz-level 3] [--no-sync]
                             [--idle-wait 0] [--data-dir bench/data] [--timeout 1800]
                             [--json results.json]

Every job compares our command with one or more reference tools on the same generated access
log (read from the page cache), each command writing a file in the data dir (deleted after the
run). Rounds are interleaved: in round r every job runs each of its contenders once, starting at
contender r (A,B,A,B... with the first one alternating), and the median wall time of the whole
command (interpreter start-up, spawning workers and our sink's fsync included; --no-sync
drops that fsync, which the reference tools writing to `> OUT` never do) is reported.

Compression: gzip (zlib, auto, zlib-ng -5, isal -3; -p 1 vs -p N) vs pigz; zstd vs zstd -T;
bz2 vs pbzip2 and lbzip2; xz vs xz -T; BGZF vs bgzip; lz4 vs lz4 -1.
Decompression: pigz-made gzip vs gzip -dc and pigz -dc; bgzip-made BGZF vs bgzip -d; our
multi-frame zstd vs zstd -d; pbzip2-made multi-stream bz2 vs pbzip2 -d and lbzip2 -d.

Every output is verified once (compressed: decompressed by a standard tool and compared with
the input; decompressed: compared with the input), so a fast but wrong row cannot pass. A
command that fails is reported on its row (with its error) and the benchmark goes on.
bz2 and xz are slow: they run on a smaller input (--slow-size, default 64 MiB), and xz at
--xz-level (default 3) on both sides.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from run import _children_cpu, _machine_cpu, ensure_input, precompile, settle, unlink
from dataflow.sizes import format_size, parse_size

HERE = Path(__file__).resolve().parent

# Targets. speed: (reference median s / our median s) >= x; size: (our bytes / reference bytes) <= x
T_GZIP_ZLIB_SPEED, T_GZIP_ZLIB_SIZE = 0.95, 1.005
T_GZIP_FAST_SPEED, T_GZIP_FAST_SIZE = 1.8, 1.0
T_GZIP_SCALING = 1.85
T_ZSTD_SPEED = 1.0
T_BGZF_SIZE = 1.01
T_GUNZIP_VS_GZIP = 1.0
T_BGZF_D_VS_BGZIP = 0.8

SLOW_GROUPS = {"c-bz2", "c-xz", "d-bz2"}  # these run on the --slow-size input
CONTENDED = 0.25  # a run is "contended" when other processes used > this many cores on average


# ----------------------------------------------------------------------------- helpers
def tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0].strip("* ") if text else "?"


def wait_idle(max_wait: float, window: float = 0.5, threshold: float = 0.15) -> float:
    """Untimed: wait (up to `max_wait` s) until the machine's busy CPU over `window` s is under
    `threshold` of one core, so a run does not start in the middle of someone else's burst.
    Returns the seconds waited beyond the first window."""
    t0 = time.perf_counter()
    while True:
        b0 = _machine_cpu()[0]
        time.sleep(window)
        if (_machine_cpu()[0] - b0) / window < threshold \
                or time.perf_counter() - t0 >= max_wait:
            return max(0.0, time.perf_counter() - t0 - window)


def short_error(stderr: str) -> str:
    """The most telling line of a failed command's stderr (a traceback's last line)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= 160 else line[:157] + "..."


def check_bgzf(path: Path) -> str:
    """Walk the BGZF block chain: every member has the BC extra field and the sizes chain up to
    the end of the file, which is the standard 28-byte EOF block. '' if fine, else the problem."""
    eof = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    size = path.stat().st_size
    pos = blocks = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"\x1f\x8b\x08\x04":
                return f"no BGZF block header at byte {pos}"
            xlen = struct.unpack("<H", head[10:12])[0]
            extra = f.read(xlen)
            bsize = None
            i = 0
            while i + 4 <= len(extra):
                sub, slen = extra[i:i + 2], struct.unpack("<H", extra[i + 2:i + 4])[0]
                if sub == b"BC" and slen == 2:
                    bsize = struct.unpack("<H", extra[i + 4:i + 6])[0] + 1
                i += 4 + slen
            if bsize is None:
                return f"block at byte {pos} has no BC (BSIZE) field"
            pos += bsize
            blocks += 1
        if pos != size:
            return f"last block overruns the file ({pos} > {size})"
        f.seek(size - len(eof))
        if f.read() != eof:
            return "no BGZF EOF block at the end"
    return ""


# ----------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    key: str
    label: str                 # short name in the tables
    argv: list[str]            # {out} is replaced by the output path
    stdout_out: bool           # True: `argv > OUT`; False: the command writes {out} itself
    ours: bool
    nbytes: int                # uncompressed bytes (MB/s are uncompressed MB/s)
    verify: Callable[[Path], str]  # output path -> "" (ok) or what is wrong
    verify_how: str
    missing: str = ""
    error: str = ""            # set when a run failed; the contender is not run again
    stderr: str = ""
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)
    steal: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    sha256: str = ""
    verified: str = ""         # "" until checked; "ok: ..." or "WRONG: ..."

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.error else None

    @property
    def size(self) -> int | None:
        return self.sizes[0] if self.sizes else None

    @property
    def shell(self) -> str:
        words = ["OUT" if w == "{out}" else w for w in self.argv]
        if words and words[0] == sys.executable:
            words = ["python"] + words[1:]
        return " ".join(words) + (" > OUT" if self.stdout_out else "")

    @property
    def status(self) -> str:
        if self.missing:
            return "missing"
        if self.error:
            return "FAILED"
        if self.verified.startswith("WRONG"):
            return "WRONG OUTPUT"
        return ""


@dataclass
class Row:
    job: str
    ours: str                  # contender keys
    ref: str
    speed_target: float | None = None
    size_target: float | None = None
    size_row: bool = True      # has a compressed-size ratio (compression rows)
    # filled in by evaluate()
    ours_mbs: float | None = None
    ref_mbs: float | None = None
    ratio: float | None = None
    size_ratio: float | None = None
    result: str = ""
    note: str = ""


@dataclass
class Group:
    id: str                    # c-gzip, d-zstd, ...
    title: str
    contenders: list[Contender]
    rows: list[Row]
    setup: Callable[[], str] | None = None   # makes the compressed input; "" or why it failed
    setup_note: str = ""
    cleanup: list[Path] = field(default_factory=list)


def which(tool: str) -> str:
    return "" if shutil.which(tool) else f"missing: {tool} not installed"


def pipe_verify(decoder: list[str], original: Path) -> Callable[[Path], str]:
    """decoder OUT | cmp - original."""
    def check(out: Path) -> str:
        if shutil.which(decoder[0]) is None:
            return f"NOT VERIFIED: {decoder[0]} not installed"
        d = subprocess.Popen([*decoder, str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        c = subprocess.run(["cmp", "-", str(original)], stdin=d.stdout, capture_output=True,
                           text=True)
        assert d.stdout is not None and d.stderr is not None
        d.stdout.close()
        err = d.stderr.read().decode(errors="replace")
        d.wait()
        if d.returncode != 0:
            return f"WRONG: {' '.join(decoder)} failed (exit {d.returncode}): {short_error(err)}"
        if c.returncode != 0:
            return f"WRONG: differs from the input: {(c.stdout + c.stderr).strip()}"
        return ""
    return check


def cmp_verify(original: Path) -> Callable[[Path], str]:
    def check(out: Path) -> str:
        c = subprocess.run(["cmp", str(out), str(original)], capture_output=True, text=True)
        if c.returncode != 0:
            return f"WRONG: differs from the input: {(c.stdout + c.stderr).strip()}"
        return ""
    return check


def bgzf_verify(original: Path, workers: int) -> Callable[[Path], str]:
    # any gzip reader reads BGZF (a series of gzip members); bgzip's own when it is there
    inner = pipe_verify(["bgzip", "-dc", "-@", str(workers)] if shutil.which("bgzip") else
                        gz_decoder(), original)

    def check(out: Path) -> str:
        problem = check_bgzf(out)
        if problem:
            return f"WRONG: not BGZF: {problem}"
        return inner(out)
    return check


def gz_decoder() -> list[str]:
    return ["pigz", "-dc"] if shutil.which("pigz") else ["gzip", "-dc"]


def bz2_decoder(workers: int) -> list[str]:
    return ["lbzip2", "-dc", "-n", str(workers)] if shutil.which("lbzip2") else ["bzip2", "-dc"]


def auto_backend(use: str, level: int) -> str:
    """Which deflate backend `--backend auto` picks (best effort: asks the engine)."""
    try:
        from workers.compress import deflate_backend  # type: ignore
        return deflate_backend("auto", level, use)[0]
    except Exception:  # noqa: BLE001 - informational only
        return "?"


def make_groups(a: argparse.Namespace, data: Path, inp: Path, n: int, slow: Path,
                slow_n: int) -> list[Group]:
    py = sys.executable
    p = a.workers
    nosync = ["--no-sync"] if a.no_sync else []
    df_c = [py, "-m", "dataflow", "compress", *nosync]
    df_d = [py, "-m", "dataflow", "decompress", *nosync]
    xl = a.xz_level
    groups: list[Group] = []

    def ours_c(key: str, label: str, opts: list[str], src: Path, nbytes: int,
               verify: Callable[[Path], str], how: str) -> Contender:
        return Contender(key, label, [*df_c, *opts, "-k", "--force", str(src), "-o", "{out}"],
                         False, True, nbytes, verify, how)

    def ref(key: str, label: str, argv: list[str], nbytes: int,
            verify: Callable[[Path], str], how: str) -> Contender:
        return Contender(key, label, argv, True, False, nbytes, verify, how,
                         missing=which(argv[0]))

    # ---- compression
    gz_v, gz_how = pipe_verify(gz_decoder(), inp), f"{' '.join(gz_decoder())} | cmp"

    def backend(c: Contender, module: str, package: str) -> Contender:
        if importlib.util.find_spec(module) is None:
            c.missing = f"missing: Python package {package} not installed"
        return c

    auto = auto_backend("gzip", 6)
    groups.append(Group("c-gzip", f"compress gzip ({format_size(n)})", [
        ours_c("gz-zlib", f"dataflow gzip -6 zlib -p{p}",
               ["-f", "gzip", "-l", "6", "--backend", "zlib", "-p", str(p)], inp, n, gz_v, gz_how),
        ours_c("gz-auto", f"dataflow gzip -6 auto ({auto}) -p{p}",
               ["-f", "gzip", "-l", "6", "--backend", "auto", "-p", str(p)], inp, n, gz_v, gz_how),
        backend(ours_c("gz-zlibng5", f"dataflow gzip -5 zlib-ng -p{p}",
                       ["-f", "gzip", "-l", "5", "--backend", "zlib-ng", "-p", str(p)], inp, n,
                       gz_v, gz_how), "zlib_ng", "zlib-ng"),
        backend(ours_c("gz-isal3", f"dataflow gzip -3 isal -p{p}",
                       ["-f", "gzip", "-l", "3", "--backend", "isal", "-p", str(p)], inp, n,
                       gz_v, gz_how), "isal", "isal"),
        ours_c("gz-zlib-p1", "dataflow gzip -6 zlib -p1",
               ["-f", "gzip", "-l", "6", "--backend", "zlib", "-p", "1"], inp, n, gz_v, gz_how),
        ref("pigz", f"pigz -6 -p {p}", ["pigz", "-6", "-p", str(p), "-c", str(inp)], n,
            gz_v, gz_how),
    ], [
        Row(f"gzip -6 zlib -p{p} vs pigz -6 -p{p}", "gz-zlib", "pigz",
            T_GZIP_ZLIB_SPEED, T_GZIP_ZLIB_SIZE),
        Row(f"gzip -6 auto ({auto}) -p{p} vs pigz -6", "gz-auto", "pigz",
            T_GZIP_FAST_SPEED, T_GZIP_FAST_SIZE),
        Row(f"gzip -5 zlib-ng -p{p} vs pigz -6", "gz-zlibng5", "pigz",
            T_GZIP_FAST_SPEED, T_GZIP_FAST_SIZE),
        Row(f"gzip -3 isal -p{p} vs pigz -6", "gz-isal3", "pigz",
            T_GZIP_FAST_SPEED, T_GZIP_FAST_SIZE),
        Row(f"gzip -6 zlib scaling -p1 -> -p{p}", "gz-zlib", "gz-zlib-p1", T_GZIP_SCALING),
    ]))

    groups.append(Group("c-zstd", f"compress zstd ({format_size(n)})", [
        ours_c("zst", f"dataflow zstd -3 -p{p}", ["-f", "zstd", "-l", "3", "-p", str(p)], inp, n,
               pipe_verify(["zstd", "-q", "-dc"], inp), "zstd -dc | cmp"),
        ref("zstd", f"zstd -3 -T{p}", ["zstd", "-q", "-3", f"-T{p}", "-c", str(inp)], n,
            pipe_verify(["zstd", "-q", "-dc"], inp), "zstd -dc | cmp"),
    ], [Row(f"zstd -3 -p{p} vs zstd -3 -T{p}", "zst", "zstd", T_ZSTD_SPEED)]))

    bz_v, bz_how = pipe_verify(bz2_decoder(p), slow), f"{' '.join(bz2_decoder(p))} | cmp"
    groups.append(Group("c-bz2", f"compress bz2 ({format_size(slow_n)})", [
        ours_c("bz2", f"dataflow bz2 -9 -p{p}", ["-f", "bz2", "-l", "9", "-p", str(p)], slow,
               slow_n, bz_v, bz_how),
        ref("pbzip2", f"pbzip2 -9 -p{p}", ["pbzip2", "-9", f"-p{p}", "-c", str(slow)], slow_n,
            bz_v, bz_how),
        ref("lbzip2", f"lbzip2 -9 -n {p}", ["lbzip2", "-9", "-n", str(p), "-c", str(slow)],
            slow_n, bz_v, bz_how),
    ], [Row(f"bz2 -9 -p{p} vs pbzip2 -9 -p{p}", "bz2", "pbzip2"),
        Row(f"bz2 -9 -p{p} vs lbzip2 -9 -n {p}", "bz2", "lbzip2")]))

    xz_v = pipe_verify(["xz", "-dc", f"-T{p}"], slow)
    groups.append(Group("c-xz", f"compress xz ({format_size(slow_n)})", [
        ours_c("xz", f"dataflow xz -{xl} -p{p}", ["-f", "xz", "-l", str(xl), "-p", str(p)], slow,
               slow_n, xz_v, "xz -dc | cmp"),
        ref("xz-ref", f"xz -T{p} -{xl}", ["xz", "-q", f"-T{p}", f"-{xl}", "-c", str(slow)],
            slow_n, xz_v, "xz -dc | cmp"),
    ], [Row(f"xz -{xl} -p{p} vs xz -T{p} -{xl}", "xz", "xz-ref")]))

    bg_v = bgzf_verify(inp, p)
    bg_dec = "bgzip -dc" if shutil.which("bgzip") else " ".join(gz_decoder())
    bg_how = f"BGZF block chain + {bg_dec} | cmp"
    groups.append(Group("c-bgzf", f"compress BGZF ({format_size(n)})", [
        ours_c("bgzf", f"dataflow bgzf -6 -p{p} ({auto_backend('bgzf', 6)})",
               ["-f", "bgzf", "-l", "6", "-p", str(p)], inp, n, bg_v, bg_how),
        ref("bgzip", f"bgzip -@ {p} -l 6", ["bgzip", "-@", str(p), "-l", "6", "-c", str(inp)],
            n, bg_v, bg_how),
    ], [Row(f"bgzf -6 -p{p} vs bgzip -@ {p} -l 6", "bgzf", "bgzip", None, T_BGZF_SIZE)]))

    lz_v = pipe_verify(["lz4", "-q", "-dc"], inp)
    groups.append(Group("c-lz4", f"compress lz4 ({format_size(n)})", [
        ours_c("lz4", f"dataflow lz4 -p{p} (level 0)", ["-f", "lz4", "-p", str(p)], inp, n,
               lz_v, "lz4 -dc | cmp"),
        ref("lz4-ref", "lz4 -1 (1 thread)", ["lz4", "-q", "-1", "-c", str(inp)], n, lz_v,
            "lz4 -dc | cmp"),
    ], [Row(f"lz4 -p{p} vs lz4 -1", "lz4", "lz4-ref")]))

    # ---- decompression: each input is made at the start of the run by the tool its title names
    def ours_d(key: str, label: str, src: Path, original: Path, nbytes: int) -> Contender:
        return Contender(key, label, [*df_d, "-p", str(p), "-k", "--force", str(src), "-o",
                                      "{out}"], False, True, nbytes, cmp_verify(original), "cmp")

    def ref_d(key: str, label: str, argv: list[str], original: Path, nbytes: int) -> Contender:
        return Contender(key, label, argv, True, False, nbytes, cmp_verify(original), "cmp",
                         missing=which(argv[0]))

    def maker(argv: list[str], dst: Path, to_stdout: bool = True) -> Callable[[], str]:
        def make() -> str:
            if shutil.which(argv[0]) is None:
                return f"missing: {argv[0]} not installed (it makes this input)"
            with open(dst, "wb") if to_stdout else open(os.devnull, "wb") as f:
                r = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE)
            if r.returncode != 0:
                unlink(dst)
                return (f"FAILED making the input: {' '.join(argv)}: exit {r.returncode}: "
                        f"{short_error(r.stderr.decode(errors='replace'))}")
            return ""
        return make

    gz_in = data / "in-pigz6.gz"
    groups.append(Group("d-gzip", f"decompress gzip, one member, made by pigz -6 "
                        f"({format_size(n)})", [
        ours_d("d-gz", f"dataflow decompress -p{p} (gzip)", gz_in, inp, n),
        ref_d("gunzip", "gzip -dc", ["gzip", "-dc", str(gz_in)], inp, n),
        ref_d("unpigz", "pigz -dc", ["pigz", "-dc", str(gz_in)], inp, n),
    ], [Row(f"gunzip (pigz-made) -p{p} vs gzip -dc", "d-gz", "gunzip", T_GUNZIP_VS_GZIP,
            size_row=False),
        Row(f"gunzip (pigz-made) -p{p} vs pigz -dc", "d-gz", "unpigz", size_row=False)],
        setup=maker(["pigz", "-6", "-p", str(p), "-c", str(inp)], gz_in), cleanup=[gz_in]))

    bg_in = data / "in-bgzip6.gz"
    groups.append(Group("d-bgzf", f"decompress BGZF made by bgzip -l 6 ({format_size(n)})", [
        ours_d("d-bgzf", f"dataflow decompress -p{p} (bgzf)", bg_in, inp, n),
        ref_d("unbgzip", f"bgzip -d -@ {p}", ["bgzip", "-d", "-@", str(p), "-c", str(bg_in)],
              inp, n),
    ], [Row(f"BGZF (bgzip-made) -p{p} vs bgzip -d -@ {p}", "d-bgzf", "unbgzip",
            T_BGZF_D_VS_BGZIP, size_row=False)],
        setup=maker(["bgzip", "-@", str(p), "-l", "6", "-c", str(inp)], bg_in), cleanup=[bg_in]))

    zs_in = data / "in-dataflow.zst"
    groups.append(Group("d-zstd", f"decompress zstd, multi-frame, made by dataflow compress "
                        f"({format_size(n)})", [
        ours_d("d-zst", f"dataflow decompress -p{p} (zstd)", zs_in, inp, n),
        ref_d("unzstd", "zstd -d", ["zstd", "-q", "-d", "-c", str(zs_in)], inp, n),
    ], [Row(f"zstd (multi-frame) -p{p} vs zstd -d", "d-zst", "unzstd", size_row=False)],
        setup=maker([*df_c, "-f", "zstd", "-l", "3", "-p", str(p), "-k", "--force", str(inp),
                     "-o", str(zs_in)], zs_in, to_stdout=False), cleanup=[zs_in]))

    bz_in = data / "in-pbzip2.bz2"
    groups.append(Group("d-bz2", f"decompress bz2, multi-stream, made by pbzip2 -9 "
                        f"({format_size(slow_n)})", [
        ours_d("d-bz2", f"dataflow decompress -p{p} (bz2)", bz_in, slow, slow_n),
        ref_d("unpbzip2", f"pbzip2 -d -p{p}", ["pbzip2", "-d", f"-p{p}", "-c", str(bz_in)],
              slow, slow_n),
        ref_d("unlbzip2", f"lbzip2 -d -n {p}", ["lbzip2", "-d", "-n", str(p), "-c", str(bz_in)],
              slow, slow_n),
    ], [Row(f"bz2 (pbzip2-made) -p{p} vs pbzip2 -d -p{p}", "d-bz2", "unpbzip2", size_row=False),
        Row(f"bz2 (pbzip2-made) -p{p} vs lbzip2 -d -n {p}", "d-bz2", "unlbzip2",
            size_row=False)],
        setup=maker(["pbzip2", "-9", f"-p{p}", "-c", str(slow)], bz_in), cleanup=[bz_in]))
    return groups


def select(groups: list[Group], only: str | None) -> list[Group]:
    """--only gzip,zstd: tokens match a format (both directions), a group id (c-gzip, d-bz2)
    or a direction (compress, decompress)."""
    if not only:
        return groups
    tokens = {t.strip().lower() for t in only.split(",") if t.strip()}
    known = {g.id for g in groups} | {g.id[2:] for g in groups} | {"compress", "decompress"}
    unknown = tokens - known
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; use any of "
                         f"{', '.join(sorted(known))}")
    direction = {"c": "compress", "d": "decompress"}
    return [g for g in groups
            if g.id in tokens or g.id[2:] in tokens or direction[g.id[0]] in tokens]


# ----------------------------------------------------------------------------- running
def run_once(c: Contender, data: Path, timeout: float) -> Path | None:
    """Run `c` once and record it; return the output path, or None when it failed."""
    dst = data / f"out-{c.key}"
    unlink(dst)
    argv = [str(dst) if w == "{out}" else w for w in c.argv]
    f = open(dst, "wb") if c.stdout_out else None
    try:
        cpu0 = _children_cpu()
        busy0, steal0 = _machine_cpu()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=f if f else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            c.error = f"timed out after {timeout:g} s"
            c.stderr = ""
            unlink(dst)
            return None
        except BaseException:  # Ctrl-C: its own session did not get the SIGINT; stop it
            stop(proc)
            raise
        seconds = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
        busy1, steal1 = _machine_cpu()
    finally:
        if f is not None:
            f.close()
    if proc.returncode != 0:
        c.stderr = err.decode(errors="replace")
        c.error = f"exit {proc.returncode}: {short_error(c.stderr)}"
        unlink(dst)
        return None
    c.times.append(seconds)
    c.cpu.append(cpu)
    c.foreign.append(max(0.0, busy1 - busy0 - cpu))
    c.steal.append(steal1 - steal0)
    c.sizes.append(dst.stat().st_size)
    return dst


def stop(proc: subprocess.Popen) -> None:
    """End a command we started (it leads its own session): SIGTERM, which lets dataflow
    remove its temp file and shared memory, then SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def fixed_cost(data: Path, workers: int, extra: list[str]) -> dict[str, float | str]:
    """Median of 3 runs of our commands on an empty input: interpreter start-up, imports,
    spawning the workers, teardown. What every row pays once, whatever the size."""
    empty = data / "in-empty"
    empty.write_bytes(b"")
    gz = data / "in-empty.gz"
    with open(gz, "wb") as f:
        subprocess.run(["gzip", "-c", str(empty)], stdout=f, check=True)
    out = data / "out-empty"
    base = [sys.executable, "-m", "dataflow"]
    result: dict[str, float | str] = {}
    try:
        for name, argv in (("compress", [*base, "compress", *extra, "-p", str(workers), "-k",
                                         "--force", str(empty), "-o", str(out)]),
                           ("decompress", [*base, "decompress", *extra, "-p", str(workers),
                                           "-k", "--force", str(gz), "-o", str(out)])):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                times.append(time.perf_counter() - t0)
                if r.returncode != 0:
                    result[name] = (f"FAILED: exit {r.returncode}: "
                                    f"{short_error(r.stderr.decode(errors='replace'))}")
                    break
            else:
                result[name] = statistics.median(times)
            unlink(out)
    finally:
        for path in (empty, gz, out):
            unlink(path)
    return result


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def run_groups(groups: list[Group], data: Path, repeat: int, timeout: float,
               idle_wait: float) -> tuple[list[list[str]], float]:
    orders: list[list[str]] = []
    waited = 0.0
    for r in range(repeat):
        order_r: list[str] = []
        for g in groups:
            if g.setup_note:
                continue
            runnable = [c for c in g.contenders if not c.missing and not c.error]
            if not runnable:
                continue
            k = r % len(runnable)
            for c in runnable[k:] + runnable[:k]:
                order_r.append(c.key)
                if idle_wait > 0:
                    waited += wait_idle(idle_wait)
                dst = run_once(c, data, timeout)
                if dst is None:
                    print(f"  round {r + 1}/{repeat}  {c.label:<34} FAILED: {c.error}",
                          file=sys.stderr, flush=True)
                    settle()
                    continue
                print(f"  round {r + 1}/{repeat}  {c.label:<34} {c.times[-1]:8.3f} s  "
                      f"(cpu {c.cpu[-1]:6.2f} s, other {c.foreign[-1]:5.2f} s, steal "
                      f"{c.steal[-1]:4.2f} s)  {c.sizes[-1]:,} B", file=sys.stderr, flush=True)
                if not c.verified:
                    problem = c.verify(dst)
                    c.verified = problem or f"ok ({c.verify_how})"
                    if g.id.startswith("c-"):
                        c.sha256 = sha256(dst)
                    if problem:
                        print(f"  !! {c.label}: {problem}", file=sys.stderr, flush=True)
                unlink(dst)
                settle()
        orders.append(order_r)
    return orders, waited


# ----------------------------------------------------------------------------- report
def evaluate(groups: list[Group]) -> None:
    for g in groups:
        by = {c.key: c for c in g.contenders}
        for row in g.rows:
            o, f = by[row.ours], by[row.ref]
            if g.setup_note:
                row.result = "missing" if g.setup_note.startswith("missing") else "FAIL"
                row.note = g.setup_note
                continue
            if o.median is not None:
                row.ours_mbs = o.nbytes / o.median / 1e6
            if f.median is not None:
                row.ref_mbs = f.nbytes / f.median / 1e6
            if row.size_row and o.size and f.size:
                row.size_ratio = o.size / f.size
            if o.median is not None and f.median is not None:
                row.ratio = f.median / o.median
            problem = next((x for x in (o, f) if x.status), None)
            if problem is not None:
                # ours failing or wrong fails the row; a reference missing or failing leaves
                # nothing to compare with
                st = problem.status
                row.result = ("missing" if st == "missing" else
                              "FAIL" if problem.ours or st == "WRONG OUTPUT" else "n/a")
                why = problem.missing or problem.error or problem.verified
                row.note = f"{problem.label}: {why}"
                continue
            assert row.ratio is not None
            checks = []
            if row.speed_target is not None:
                checks.append(row.ratio >= row.speed_target)
            if row.size_target is not None and row.size_ratio is not None:
                checks.append(row.size_ratio <= row.size_target)
            row.result = ("PASS" if all(checks) else "FAIL") if checks else "report"
            if row.ours == "gz-zlib" and row.ref == "gz-zlib-p1":
                same = bool(o.sha256) and o.sha256 == f.sha256
                row.note = "same bytes at -p1 and -pN" if same else "-p1 and -pN outputs DIFFER"


def fastest_gzip(groups: list[Group]) -> Row | None:
    """The 'fastest backend at a size no worse than pigz -6' target, over the rows of the
    auto (-6), zlib-ng -5 and isal -3 runs."""
    g = next((g for g in groups if g.id == "c-gzip"), None)
    if g is None:
        return None
    cands = [r for r in g.rows if r.ours in ("gz-auto", "gz-zlibng5", "gz-isal3")]
    ok = [r for r in cands if r.ratio is not None and r.size_ratio is not None
          and r.size_ratio <= T_GZIP_FAST_SIZE and r.result in ("PASS", "FAIL")]
    row = Row("gzip fastest backend, size <= pigz -6", "", "", T_GZIP_FAST_SPEED,
              T_GZIP_FAST_SIZE)
    for r in cands:       # each backend's row is a candidate for this one, not a target
        if r.result in ("PASS", "FAIL"):
            r.result = "report"
            r.note = "candidate below" if r in ok else "larger than pigz -6: not a candidate"
    if not ok:
        if cands and all(r.result == "missing" for r in cands):
            row.result, row.note = "missing", cands[0].note
        else:
            row.result, row.note = "FAIL", "no backend row reached a size <= pigz -6's"
        return row
    best = max(ok, key=lambda r: r.ratio or 0.0)
    row.ours_mbs, row.ref_mbs, row.ratio, row.size_ratio = (best.ours_mbs, best.ref_mbs,
                                                            best.ratio, best.size_ratio)
    row.result = "PASS" if (best.ratio or 0) >= T_GZIP_FAST_SPEED else "FAIL"
    row.note = f"best: {best.job.split(' vs ')[0]}"
    return row


def target_text(row: Row) -> str:
    parts = []
    if row.speed_target is not None:
        parts.append(f">= {row.speed_target:g}x")
    if row.size_target is not None:
        parts.append(f"size <= {row.size_target:g}x")
    return ", ".join(parts) if parts else "report"


def fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def contended(c: Contender) -> int:
    """Runs during which other processes used more than a quarter of a core on average."""
    return sum(1 for t, x in zip(c.times, c.foreign) if x > max(CONTENDED * t, 0.1))


def build_report(a: argparse.Namespace, groups: list[Group], n: int, slow_n: int,
                 elapsed: float, fixed: dict[str, Any], waited: float) -> tuple[str, list[Row]]:
    evaluate(groups)
    extra = fastest_gzip(groups)
    head = ("job", "ours MB/s", "ref MB/s", "ratio", "size ratio", "target", "result")
    table: list[tuple[str, ...] | str] = []
    all_rows: list[Row] = []
    for g in groups:
        table.append(f"[{g.title}]")
        rows = list(g.rows) + ([extra] if g.id == "c-gzip" and extra else [])
        for row in rows:
            all_rows.append(row)
            table.append((row.job, fmt(row.ours_mbs, ",.0f"), fmt(row.ref_mbs, ",.0f"),
                          fmt(row.ratio, ".2f", "x"), fmt(row.size_ratio, ".4f", "x"),
                          target_text(row), row.result + (f"  ({row.note})" if row.note else "")))
    w = [max(len(r[i]) for r in [head, *[t for t in table if isinstance(t, tuple)]])
         for i in range(6)]

    def line(t: tuple[str, ...]) -> str:
        return (f"{t[0]:<{w[0]}}  {t[1]:>{w[1]}}  {t[2]:>{w[2]}}  {t[3]:>{w[3]}}  "
                f"{t[4]:>{w[4]}}  {t[5]:<{w[5]}}  {t[6]}").rstrip()

    slow = any(g.id in SLOW_GROUPS for g in groups)
    out = [f"input {n:,} bytes ({format_size(n)}); "
           + (f"bz2 and xz jobs {slow_n:,} bytes ({format_size(slow_n)}); " if slow else "")
           + f"workers {a.workers}; median of {a.repeat} interleaved "
           f"rounds; our outputs {'not ' if a.no_sync else ''}fsynced (references' never); "
           f"{elapsed:.0f} s in all",
           "MB/s = uncompressed bytes / median wall s / 1e6 (whole command); ratio = reference "
           "median s / ours (>1: ours faster; scaling row: -p1's / -pN's); size ratio = our "
           "compressed bytes / reference's",
           line(head), "-" * (sum(w) + 24)]
    for t in table:
        out.append(t if isinstance(t, str) else line(t))

    out.append("")
    out.append("[contenders: median (min-max) wall s, median CPU s (user+sys, whole process "
               "tree), output bytes, verification]")
    lw = max(len(c.label) for g in groups for c in g.contenders)
    for g in groups:
        out.append(f"{g.id}:" + (f" {g.setup_note}" if g.setup_note else ""))
        for c in g.contenders:
            if c.missing or c.error or not c.times:
                why = c.missing or (f"FAILED: {c.error}" if c.error else "not run")
                out.append(f"  {c.label:<{lw}}  {why}")
                if c.error:
                    out.append(f"  {'':<{lw}}  command: {c.shell}")
                continue
            rng = f"({min(c.times):.3f}-{max(c.times):.3f})"
            k = contended(c)
            busy = f"  [{k} of {len(c.times)} runs contended]" if k else ""
            out.append(f"  {c.label:<{lw}}  {c.median:7.3f} s {rng:<15} cpu "
                       f"{statistics.median(c.cpu):6.2f} s  {c.size:>13,} B  {c.verified}{busy}")
    foreign = [x for g in groups for c in g.contenders for x in c.foreign]
    steal = [x for g in groups for c in g.contenders for x in c.steal]
    wall = sum(x for g in groups for c in g.contenders for x in c.times)
    if foreign:
        runs = [(t, x) for g in groups for c in g.contenders for t, x in zip(c.times, c.foreign)]
        k = sum(1 for t, x in runs if x > max(CONTENDED * t, 0.1))
        out.append(f"noise: over all timed runs ({wall:.1f} s), other busy CPU on the machine "
                   f"{sum(foreign):.1f} s (max in one run {max(foreign):.2f} s), hypervisor "
                   f"steal {sum(steal):.2f} s; {k} of {len(runs)} runs contended (other CPU > "
                   f"{CONTENDED:g} core on average); waited {waited:.0f} s in all for other "
                   f"load to pass before runs (--idle-wait {a.idle_wait:g})")
    fc = ", ".join(f"{k} {v:.3f} s" if isinstance(v, float) else f"{k} {v}"
                   for k, v in fixed.items())
    out.append(f"fixed cost of our commands on an empty input (start-up, spawn, teardown; "
               f"median of 3): {fc}")
    return "\n".join(out), all_rows


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = None
    versions = {t: tool_version(argv) for t, argv in {
        "pigz": ["pigz", "-V"], "gzip": ["gzip", "-V"], "zstd": ["zstd", "-V"],
        "bzip2": ["bzip2", "--help"], "pbzip2": ["pbzip2", "-V"], "lbzip2": ["lbzip2", "-V"],
        "xz": ["xz", "-V"], "lz4": ["lz4", "-V"], "bgzip": ["bgzip", "--version"]}.items()}
    try:
        from importlib.metadata import PackageNotFoundError, version
        pkgs = {}
        for name in ("zlib-ng", "isal", "deflate", "zstandard", "lz4"):
            try:
                pkgs[name] = version(name)
            except PackageNotFoundError:
                pkgs[name] = None
    except ImportError:
        pkgs = {}
    return {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "cpu_model": model, "memory": mem, "python": platform.python_version(),
            "platform": platform.platform(), "tools": versions, "python_packages": pkgs}


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="256MiB", help="input size (default 256MiB)")
    p.add_argument("--slow-size", default="64MiB",
                   help="input size of the bz2 and xz jobs, at most --size (default 64MiB)")
    p.add_argument("--xz-level", type=int, default=3, choices=range(10),
                   help="xz level, ours and xz's (default 3; 6 is xz's own default)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--workers", type=int, default=2, help="-p/-T/-@/-n of every tool (default 2)")
    p.add_argument("--only", metavar="LIST",
                   help="comma-separated: gzip,bgzf,zstd,bz2,xz,lz4 (both directions), "
                        "c-gzip/d-gzip..., compress, decompress")
    p.add_argument("--data-dir", default=str(HERE / "data"),
                   help="input and outputs (default bench/data; gitignored)")
    p.add_argument("--timeout", type=float, default=1800, help="per command, seconds (1800)")
    p.add_argument("--no-sync", action="store_true",
                   help="pass --no-sync to our commands: no fsync of the output, as gzip, pigz "
                        "and the other tools writing to `> OUT` (default: our default, fsync)")
    p.add_argument("--idle-wait", type=float, default=0, metavar="SECONDS",
                   help="before each run, wait up to this long for other processes' CPU load "
                        "to pass (a shared machine; default 0: do not wait)")
    p.add_argument("--json", metavar="FILE", help="also save everything as JSON")
    a = p.parse_args()
    if a.repeat < 1 or a.workers < 1:
        p.error("--repeat and --workers must be at least 1")
    precompile()   # as an installed copy (run.precompile)
    try:
        size = parse_size(a.size)
        slow_size = min(parse_size(a.slow_size), size)
    except ValueError as e:
        p.error(str(e))
    # SIGTERM like Ctrl-C: stop the running command, remove the outputs, then exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start = time.perf_counter()
    data = Path(a.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    if shutil.which("cmp") is None:
        p.error("cmp (GNU diffutils) is needed to verify outputs")

    # check --only before generating anything; make the small input only if it is used
    wanted = {g.id for g in select(make_groups(a, data, data / "x", 0, data / "x", 0), a.only)}
    inp, n = ensure_input(data, size)
    slow, slow_n = inp, n
    if slow_size != size and wanted & SLOW_GROUPS:
        slow, slow_n = ensure_input(data, slow_size)
    groups = select(make_groups(a, data, inp, n, slow, slow_n), a.only)
    for g in groups:
        for c in g.contenders:
            if c.missing:
                print(f"note: {c.label}: {c.missing}; its rows say so", file=sys.stderr)

    try:
        # no root to drop the page cache: warm it, so everyone reads the input from RAM; and
        # write one input's worth once, untimed (this VM returns freed memory to its host and
        # the first big allocation after a pause pays for getting it back; see bench/README.md)
        print("warm-up: cat inputs > /dev/null, one untimed write", file=sys.stderr, flush=True)
        with open(os.devnull, "wb") as null:
            for path in {inp, slow}:
                subprocess.run(["cat", str(path)], stdout=null, check=True)
        warm = data / "out-warmup"
        with open(warm, "wb") as f:
            subprocess.run(["cat", str(inp)], stdout=f, check=True)
        unlink(warm)
        settle()
        for g in groups:
            if g.setup is not None:
                print(f"setup: making the input of {g.id}", file=sys.stderr, flush=True)
                g.setup_note = g.setup()
                if g.setup_note:
                    print(f"  !! {g.id}: {g.setup_note}", file=sys.stderr)
        settle()
        orders, waited = run_groups(groups, data, a.repeat, a.timeout, a.idle_wait)
        fixed = fixed_cost(data, a.workers, ["--no-sync"] if a.no_sync else [])
    finally:  # a failure or Ctrl-C leaves no big file behind
        for leftover in [*data.glob("out-*"), *data.glob(".out-*.dataflow-tmp")]:
            unlink(leftover)
        for g in groups:
            for path in g.cleanup:
                unlink(path)

    text, rows = build_report(a, groups, n, slow_n, time.perf_counter() - start, fixed,
                              waited)
    print()
    print(text)
    if a.json:
        result = {
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": machine(), "input_bytes": n, "slow_input_bytes": slow_n,
            "workers": a.workers, "repeat": a.repeat, "xz_level": a.xz_level,
            "no_sync": a.no_sync,
            "groups": [{"id": g.id, "title": g.title, "setup_note": g.setup_note or None,
                        "contenders": [{
                            "key": c.key, "label": c.label, "command": c.shell, "ours": c.ours,
                            "uncompressed_bytes": c.nbytes, "times": c.times,
                            "median": c.median, "cpu": c.cpu, "other_cpu": c.foreign,
                            "steal": c.steal, "output_bytes": c.sizes,
                            "output_sha256": c.sha256 or None, "missing": c.missing or None,
                            "error": c.error or None, "stderr": c.stderr[-4000:] or None,
                            "verified": c.verified or None} for c in g.contenders]}
                       for g in groups],
            "rows": [{"job": r.job, "ours": r.ours, "ref": r.ref, "ours_mb_per_s": r.ours_mbs,
                      "ref_mb_per_s": r.ref_mbs, "ratio": r.ratio, "size_ratio": r.size_ratio,
                      "speed_target": r.speed_target, "size_target": r.size_target,
                      "result": r.result, "note": r.note or None} for r in rows],
            "orders": orders, "fixed_cost_seconds": fixed, "idle_waited_seconds": waited,
            "table": text,
        }
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nresults saved to {a.json}", file=sys.stderr)
    # 1 when an output was wrong or one of our commands failed (targets missed do not count)
    bad = [c.label for g in groups for c in g.contenders
           if c.verified.startswith("WRONG") or (c.ours and c.error)]
    bad += [g.id for g in groups if g.setup_note.startswith("FAILED")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
