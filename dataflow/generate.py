"""Synthetic web-server access logs ("combined" format), deterministic and fast.

Rules:
- Determinism: the byte stream depends only on ``seed``; ``generate_blocks(size, seed)`` yields its
  longest prefix of whole lines that fits in ``size`` bytes. It never depends on ``block_size``,
  the process, or ``hash()``: lines are made in fixed internal batches of ``_BATCH`` lines from
  ``random.Random`` seeded with a string, using only ``random()`` (stable by Python's promise)
  and ``getrandbits()``-based calls (``randint``, ``randbytes``, stable in practice).
- Block contract: every block is non-empty, holds whole lines (ends with ``b"\\n"``) and is at most
  ``block_size`` bytes, or a single line when one line alone is longer. The total is ``<= size``
  and ``> size - _MAX_LINE`` (no line is longer than ``_MAX_LINE`` = 600 bytes); size 0 yields
  nothing.
- Line format: see ``LINE_FORMAT_DESCRIPTION``. ASCII only, about 220 bytes a line on average.

Speed comes from pools: at start (cached per seed) we build 65536-entry tables of encoded line
pieces -- client address, request with status and size, referer with user agent -- drawn with
realistic weights, so that making a batch is four ``randbytes`` calls, C-level ``map``s over
16-bit indices, one ``accumulate`` for the clock and one ``b"".join``.
"""
from __future__ import annotations

import functools
import operator
import os
import random
import sys
import time
from array import array
from bisect import bisect
from collections.abc import Iterator, Sequence
from itertools import accumulate, chain
from typing import BinaryIO, TypeVar

__all__ = ["LINE_FORMAT_DESCRIPTION", "generate_blocks", "write_sample"]

LINE_FORMAT_DESCRIPTION = (
    "Synthetic lines in the Apache/nginx combined log format, e.g. "
    '`203.0.113.7 - - [24/Nov/2026:13:45:02 +0000] "GET /api/v1/items/4821?page=3 HTTP/1.1" '
    '200 5123 "https://www.example.com/blog" "Mozilla/5.0 (...)"`: client IPv4 addresses from a '
    "pool of about 2000 with a few heavy hitters; methods GET/POST/PUT/DELETE/HEAD weighted like "
    "real traffic (mostly GET, writes only to the API); about 300 paths (static assets, pages, a "
    "JSON API, scanner probes) with query strings; HTTP/1.1, HTTP/2.0 and a little HTTP/1.0; "
    "statuses about 85% 2xx, 8% 3xx, 5% 4xx and 1.5% 5xx; response sizes by kind of resource "
    '("-" when no body); referers ("-", internal pages, search engines); about 30 browser, bot '
    "and tool user agents; UTC timestamps that start at a seed-derived moment in 2026 and never go "
    "back, moving on by small random steps (about 20 requests a second). ASCII only, about 220 "
    "bytes a line, no line over 600 bytes; the stream is a pure function of the seed."
)

_BATCH = 4096                 # lines per internal batch: fixes the stream, whatever the block size
_POOL = 1 << 16               # entries per pool, indexed by 16-bit random numbers
_DISTINCT = 8192              # distinct entries drawn per pool, repeated to fill _POOL
_MAX_LINE = 600               # no line is longer; so a sized run stops within this of its size
_STEP = (0,) * 244 + (1,) * 11 + (2,)   # seconds between lines, by random byte: ~20 lines/s
_EPOCH_2026 = 1767225600      # 2026-01-01T00:00:00Z
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

T = TypeVar("T")


def _pick(rng: random.Random, items: Sequence[T], weights: Sequence[float], k: int) -> list[T]:
    """`k` weighted draws; like Random.choices but built on random() alone, so stable."""
    cum = list(accumulate(weights))
    total, hi, rand = cum[-1], len(cum) - 1, rng.random
    return [items[bisect(cum, rand() * total, 0, hi)] for _ in range(k)]


def _draw(rng: random.Random, weighted: Sequence[tuple[T, float]], k: int) -> list[T]:
    """`k` draws from (item, weight) pairs."""
    return _pick(rng, [w[0] for w in weighted], [w[1] for w in weighted], k)


def _fill(entries: list[bytes]) -> list[bytes]:
    """Repeat `entries` (length dividing _POOL) to exactly _POOL entries."""
    return entries * (_POOL // len(entries))


_METHODS_READ = (("GET", 96.0), ("HEAD", 4.0))
_METHODS_API = (("GET", 62.0), ("POST", 25.0), ("PUT", 7.0), ("DELETE", 3.5), ("HEAD", 2.5))
_PROTOCOLS = (("HTTP/1.1", 70.0), ("HTTP/2.0", 28.0), ("HTTP/1.0", 2.0))
_STATUSES = (
    (200, 80.2), (201, 1.5), (204, 2.5), (206, 0.6),
    (301, 2.0), (302, 2.5), (304, 3.5),
    (400, 1.0), (401, 0.8), (403, 0.5), (404, 1.7), (405, 0.1), (429, 0.2),
    (500, 0.8), (502, 0.35), (503, 0.3), (504, 0.1),
)
_KINDS = (("static", 40.0), ("page", 25.0), ("api", 32.0), ("probe", 1.0), ("health", 2.0))
_WORDS = (
    "alpha", "river", "stone", "cloud", "maple", "orbit", "pixel", "quartz", "lunar", "cedar",
    "ember", "delta", "fjord", "harbor", "indigo", "jasper", "kernel", "linen", "meadow", "nectar",
    "oasis", "prism", "quill", "raven", "summit", "tundra", "umber", "vortex", "willow", "zephyr",
)
_REFERERS = (
    ("-", 45.0), ("internal", 33.0), ("https://www.google.com/", 12.0),
    ("https://www.bing.com/", 2.5), ("https://duckduckgo.com/", 2.0),
    ("https://news.ycombinator.com/", 1.5), ("https://t.co/", 1.5),
    ("https://www.reddit.com/", 1.5), ("https://example.org/links.html", 1.0),
)
_AGENTS = (  # (user agent, weight); bots and tools (see _NO_REFERER) send no referer
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", 26.0),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0", 7.0),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", 9.0),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.6 Safari/605.1.15", 6.0),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", 12.0),
    ("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.6 Mobile/15E148 Safari/604.1", 2.0),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36", 8.0),
    ("Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/130.0.0.0 Mobile Safari/537.36", 4.0),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", 5.0),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0", 1.5),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", 1.5),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 4.0),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 1.5),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", 1.0),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", 0.5),
    ("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", 1.0),
    ("curl/8.5.0", 1.5),
    ("python-requests/2.32.3", 2.0),
    ("Go-http-client/1.1", 1.5),
    ("okhttp/4.12.0", 1.5),
    ("Wget/1.21.4", 0.3),
    ("kube-probe/1.30", 1.0),
    ("-", 0.5),
)
_NO_REFERER = ("bot", "curl", "python", "Go-http", "okhttp", "Wget", "kube", "Uptime")


@functools.lru_cache(maxsize=4)
def _pools(seed: int) -> tuple[list[bytes], list[bytes], list[bytes], int]:
    """(address pool, request pool, referer+agent pool, start second) for `seed`."""
    rng = random.Random(f"dataflow.generate/pools/{seed}")
    rand, randint = rng.random, rng.randint

    def hexid(n: int) -> str:
        return "%0*x" % (n, rng.getrandbits(4 * n))

    def ip() -> str:
        first = randint(1, 223)
        while first in (10, 127, 169, 172, 192):
            first = randint(1, 223)
        return f"{first}.{randint(0, 255)}.{randint(0, 255)}.{randint(1, 254)}"

    # Client addresses: 8 heavy hitters take about a quarter of the traffic, the rest a long tail.
    addrs = [ip() for _ in range(2000)]
    weights = [12.0] * 8 + [1.0 / (i + 10) * 60 for i in range(len(addrs) - 8)]
    ip_pool = _fill([f"{a} - - [".encode() for a in _pick(rng, addrs, weights, _DISTINCT)])

    # About 300 concrete paths by kind; popularity falls off with rank within each kind.
    paths: dict[str, list[str]] = {
        "static": [f"/static/css/{n}.{hexid(8)}.css" for n in ("app", "vendor", "print", "theme")]
        + [f"/static/js/{n}.{hexid(8)}.js" for n in ("app", "vendor", "runtime", "analytics")]
        + [f"/static/js/chunk-{i}.{hexid(8)}.js" for i in range(12)]
        + [f"/images/{k}/{hexid(6)}.{e}" for k, e in (("products", "jpg"), ("blog", "png"),
                                                       ("icons", "svg")) for _ in range(20)]
        + ["/favicon.ico", "/robots.txt", "/sitemap.xml", "/apple-touch-icon.png",
           "/static/fonts/inter-var.woff2", "/manifest.json"],
        "page": ["/", "/about", "/contact", "/pricing", "/login", "/signup", "/blog", "/products",
                 "/search", "/cart", "/checkout", "/account", "/docs", "/careers"]
        + [f"/blog/{a}-{b}-{randint(2019, 2026)}" for a in _WORDS[:8] for b in _WORDS[20:25]]
        + [f"/products/{randint(1000, 99999)}" for _ in range(60)]
        + [f"/category/{w}" for w in _WORDS[10:25]]
        + [f"/docs/{w}/{v}" for w in _WORDS[:6] for v in ("intro", "install", "reference")],
        "api": ["/api/v1/items", "/api/v1/orders", "/api/v1/products", "/api/v2/search",
                "/api/v1/cart", "/api/v1/session", "/api/v1/events", "/graphql"]
        + [f"/api/v1/items/{randint(1, 9999)}" for _ in range(40)]
        + [f"/api/v1/users/{randint(1, 99999)}" for _ in range(20)]
        + [f"/api/v1/users/{randint(1, 99999)}/orders" for _ in range(12)],
        "probe": ["/wp-login.php", "/.env", "/.git/config", "/phpmyadmin/", "/xmlrpc.php",
                  "/admin.php", "/wp-admin/setup-config.php", "/cgi-bin/luci", "/.aws/credentials"],
        "health": ["/healthz", "/api/v1/health", "/metrics"],
    }
    ranked = {k: [1.0 / (i + 2) for i in range(len(v))] for k, v in paths.items()}

    def query(kind: str, path: str) -> str:
        r = rand()
        if kind == "api" and path.endswith(("items", "orders", "products", "events")):
            return f"?page={randint(1, 40)}&per_page={(20, 20, 50, 100)[randint(0, 3)]}"
        if (kind == "api" and path.endswith("search")) or path == "/search":
            words = f"{_WORDS[randint(0, 29)]}+{_WORDS[randint(0, 29)]}"
            return f"?q={words}&limit={randint(1, 5) * 10}"
        if kind == "page" and r < 0.12:
            src = ("newsletter", "newsletter", "twitter", "partner")[randint(0, 3)]
            return f"?utm_source={src}&utm_medium={'email' if src == 'newsletter' else 'social'}"
        if kind == "static" and r < 0.2:
            return f"?v={hexid(6)}"
        if kind == "api" and r < 0.25:
            return f"?fields=id,name,{_WORDS[randint(0, 29)]}&expand=true"
        return ""

    def size(kind: str, status: int, method: str) -> str:
        if status in (204, 304) or method == "HEAD":
            return "-"
        if status >= 300:
            return str(int(rng.lognormvariate(5.6, 0.5)))
        mu, sigma = {"static": (9.5, 1.4), "page": (9.8, 0.6), "api": (7.3, 1.1),
                     "probe": (6.0, 0.5), "health": (3.0, 0.3)}[kind]
        return str(min(int(rng.lognormvariate(mu, sigma)) + 1, 50_000_000))

    kinds = _draw(rng, _KINDS, _DISTINCT)
    path_draws = {k: iter(_pick(rng, v, ranked[k], kinds.count(k))) for k, v in paths.items()}
    statuses = _draw(rng, _STATUSES, _DISTINCT)
    protocols = _draw(rng, _PROTOCOLS, _DISTINCT)
    api_methods = iter(_draw(rng, _METHODS_API, kinds.count("api")))
    read_methods = iter(_draw(rng, _METHODS_READ, _DISTINCT))
    requests = []
    for kind, status, proto in zip(kinds, statuses, protocols):
        path = next(path_draws[kind])
        method = next(api_methods if kind == "api" else read_methods)
        if kind == "probe":
            status = 404 if rand() < 0.9 else 403
        elif method != "GET" and status in (206, 304):
            status = 200
        elif (status == 201 and method != "POST") or (status == 204 and kind != "api"):
            status = 200
        elif method == "POST" and status == 200 and rand() < 0.3:
            status = 201
        requests.append(f'{method} {path}{query(kind, path)} {proto}" {status} '
                        f'{size(kind, status, method)} "'.encode())

    internal = paths["page"] + paths["api"][:8]
    human = {a: a != "-" and not any(tag in a for tag in _NO_REFERER) for a, _ in _AGENTS}
    tails = []
    for agent, referer in zip(_draw(rng, _AGENTS, _DISTINCT), _draw(rng, _REFERERS, _DISTINCT)):
        if not human[agent]:
            referer = "-"
        elif referer == "internal":
            referer = "https://www.example.com" + internal[int(rand() * len(internal))]
        tails.append(f'{referer}" "{agent}"\n'.encode())

    request_pool, tail_pool = _fill(requests), _fill(tails)
    stamp_len = len(b'24/Nov/2026:13:45:02 +0000] "')
    longest = (max(map(len, ip_pool)) + stamp_len + max(map(len, request_pool))
               + max(map(len, tail_pool)))
    assert longest <= _MAX_LINE, longest
    start = _EPOCH_2026 + int(rand() * 300 * 86400)
    return ip_pool, request_pool, tail_pool, start


def _stamps(first: int, count: int) -> list[bytes]:
    """Encoded '[...' timestamp pieces for the `count` seconds from Unix second `first`."""
    out: list[bytes] = []
    day, prefix = -1, b""
    for second in range(first, first + count):
        d, tod = divmod(second, 86400)
        if d != day:
            day, t = d, time.gmtime(d * 86400)
            prefix = b"%02d/%s/%04d:" % (t.tm_mday, _MONTHS[t.tm_mon - 1].encode(), t.tm_year)
        h, rest = divmod(tod, 3600)
        out.append(prefix + b'%02d:%02d:%02d +0000] "' % (h, *divmod(rest, 60)))
    return out


def _indices(rng: random.Random, n: int) -> array[int]:
    """`n` uniform 16-bit indices, the same on any byte order."""
    idx = array("H", rng.randbytes(2 * n))
    if sys.byteorder == "big":
        idx.byteswap()
    return idx


def _batches(seed: int) -> Iterator[bytes]:
    """The endless line stream for `seed`, in batches of _BATCH whole lines."""
    ip_pool, request_pool, tail_pool, second = _pools(seed)
    rng = random.Random(f"dataflow.generate/stream/{seed}")
    ips, requests, tails = ip_pool.__getitem__, request_pool.__getitem__, tail_pool.__getitem__
    step = _STEP.__getitem__
    while True:
        offsets = list(accumulate(map(step, rng.randbytes(_BATCH))))
        stamps = _stamps(second, offsets[-1] + 1)
        yield b"".join(chain.from_iterable(zip(
            map(ips, _indices(rng, _BATCH)),
            map(stamps.__getitem__, offsets),
            map(requests, _indices(rng, _BATCH)),
            map(tails, _indices(rng, _BATCH)),
        )))
        second += offsets[-1]


def generate_blocks(size: int, seed: int = 0, block_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield the first `size` bytes' worth of whole lines for `seed`, in blocks of whole lines.

    Each block is at most `block_size` bytes (or one line, if a line is longer). The concatenation
    is the longest prefix of whole lines of the seed's stream that fits in `size`.
    """
    size, seed, block_size = operator.index(size), operator.index(seed), operator.index(block_size)
    if size < 0:
        raise ValueError(f"size cannot be negative, got {size}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    remaining = size
    pending: list[bytes] = []
    pending_len = 0
    batches = _batches(seed) if size else iter(())
    for batch in batches:
        last = len(batch) >= remaining
        if last:
            batch = batch[: batch.rfind(b"\n", 0, remaining) + 1]
        remaining -= len(batch)
        pending.append(batch)
        pending_len += len(batch)
        if pending_len >= block_size:
            data = b"".join(pending)
            start = 0
            while len(data) - start >= block_size:
                end = data.rfind(b"\n", start, start + block_size) + 1
                if end <= start:                      # one line longer than block_size
                    end = data.index(b"\n", start) + 1
                yield data[start:end]
                start = end
            pending, pending_len = [data[start:]], len(data) - start
        if last:
            break
    if pending_len:
        yield b"".join(pending)


def write_sample(path_or_fileobj: str | os.PathLike[str] | BinaryIO, size: int,
                 seed: int = 0) -> int:
    """Write generate_blocks(size, seed) to a binary file object or a path; return bytes written.

    A path is written through a temporary file in the same directory, renamed into place only
    when complete; the temporary file is removed on any error.
    """
    if not isinstance(path_or_fileobj, (str, os.PathLike)):
        written = 0
        for block in generate_blocks(size, seed):
            path_or_fileobj.write(block)
            written += len(block)
        return written
    path = os.fspath(path_or_fileobj)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "xb") as f:
            written = write_sample(f, size, seed)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return written
