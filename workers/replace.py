"""replace: a regular-expression substitution on every line, like `sed -E 's/PAT/REPL/g'`.

    - replace: {pattern: '(\\d+)\\.\\d+\\.\\d+\\.\\d+', replacement: '\\1.x.x.x'}
    - replace: {pattern: 'password=\\S+', replacement: 'password=***', count: 1}

Rules:
- `pattern` is Python `re` syntax on bytes; `ignore_case` folds ASCII case; `fixed: true`
  takes the pattern *and* the replacement literally. `replacement` refers to groups as
  `\\1` (as sed does) or `\\g<name>`, `\\g<0>` for the whole match (sed's `&` is literal here).
  A bad pattern or a group the pattern lacks is an error before any data flows.
- `count`: 0 replaces every match (sed's `g`), N the first N of each line (1 is sed's plain
  `s/PAT/REPL/`).
- A match never spans lines: a line is the bytes up to the delimiter, and the pattern sees
  one line at a time (`^`/`$` are its start and end; `\\s`, `[^x]` and lookarounds cannot
  reach into the next line). An empty match right after a match is skipped, as sed does
  (`s/x*/-/g` turns `abc` into `-a-b-c-`).
- A last line without a delimiter stays without one, as in sed. A line the pattern does not
  match is copied as it is; a chunk with no match at all is passed through without a copy.
- Speed: when the pattern provably cannot match a delimiter nor tell a line's edge from the
  chunk's (checked on the parsed pattern: no `\\s`, `[^x]`, `(?s).`, `\\A`, `\\Z` that could
  reach a newline), one C-level `subn` over the whole chunk does the job (with `count` or a
  pattern that can match empty, one search over the chunk finds the lines to change, which
  are then done one by one); other patterns run line by line.
- Records stay records (`keeps_format`): the stages after it still see CSV rows or JSON
  values, provided the replacement keeps them valid. With a CSV source the header is not
  touched.
- The summary counts the substitutions made (`replacements`): counting changed lines instead
  would cost a pass per line, half the speed when most lines match.
"""
from __future__ import annotations

import re
from itertools import repeat
from typing import Any

import msgspec

try:
    from re import _constants as _C, _parser as _P   # Python 3.11+
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as _C  # type: ignore[no-redef]
    import sre_parse as _P      # type: ignore[no-redef]

from dataflow.predicates import OptionError
from dataflow.streams import ChunkInfo, Transform


class Replace(Transform):
    name = "replace"
    keeps_format = True

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        pattern: str
        replacement: str
        count: int = 0
        ignore_case: bool = False
        fixed: bool = False
        delimiter: str = "\n"

    def __init__(self, pattern: str, replacement: str, count: int = 0,
                 ignore_case: bool = False, fixed: bool = False, delimiter: str = "\n"):
        self.pattern = pattern
        self.replacement = replacement
        self.count = count
        self.ignore_case = ignore_case
        self.fixed = fixed
        self.delimiter = delimiter.encode("utf-8", "surrogateescape")
        if not self.delimiter:
            raise OptionError("the delimiter cannot be empty", ['delimiter'])
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise OptionError(f"0 (every match) or the number of matches to replace in "
                             f"each line, got {count!r}", ['count'])
        if not pattern:
            raise OptionError("an empty pattern matches everywhere; give a pattern", ['pattern'])
        raw = pattern.encode("utf-8", "surrogateescape")
        repl = replacement.encode("utf-8", "surrogateescape")
        if fixed:
            raw = re.escape(raw)
            repl = repl.replace(b"\\", b"\\\\")      # literal, no group references
        by_line = self.delimiter == b"\n"
        flags = (re.MULTILINE if by_line else 0) | (re.IGNORECASE if ignore_case else 0)
        self.regex = re.compile(raw, flags)            # re.error: reported by config
        try:
            self.regex.sub(repl, b"")      # checks \1, \g<name> against the pattern's groups
        except (re.error, IndexError) as e:
            raise OptionError(f"{e}", ['replacement']) from None
        self.template = repl
        self.literal = b"\\" not in repl
        parsed = _P.parse(raw, flags)
        self.may_be_empty = parsed.getwidth()[0] == 0
        # one search over the chunk finds exactly the lines to change when the pattern cannot
        # match a delimiter nor tell a line's start from the chunk's (see _line_safe)
        self.chunk_search = by_line and _line_safe(list(parsed), parsed.state.flags | flags)
        # ... and then, without a per-line count nor empty matches, one sub over the chunk is
        # the same as a sub of each line
        self.whole_chunk = self.chunk_search and not count and not self.may_be_empty

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if self.whole_chunk:
            # (Python 3.11 expands group references on bytes only, not on a memoryview)
            out, n = self.regex.subn(self.template, data if self.literal else bytes(data))
            if not n:
                out = data            # nothing to change: the input is the output, no copy
        elif self.chunk_search:
            out, n = self._by_search(data)
        else:
            out, n = self._by_line(data)
        chunk.summary = n
        return out

    def _sub_line(self, line: bytes) -> tuple[bytes, int]:
        if self.may_be_empty:
            return _sed_subn(self.regex, self.template, line, self.count)
        return self.regex.subn(self.template, line, self.count)

    def _by_search(self, data: memoryview) -> tuple[Any, int]:
        search = self.regex.search
        m = search(data)
        if m is None:
            return data, 0                # nothing to change: the input is the output
        buf = bytes(data)
        end = len(buf)
        sub = self._sub_line
        out: list[bytes] = []
        last = 0                          # buf[:last] is in out already
        total = 0
        while m is not None:
            at = m.start()
            ls = buf.rfind(b"\n", last, at) + 1 or last
            if ls >= end:
                break                     # an empty match after the final newline: no line
            le = buf.find(b"\n", at)
            if le < 0:
                le = end
            new, n = sub(buf[ls:le])
            if n:
                total += n
                out.append(buf[last:ls])
                out.append(new)
                last = le
            if le >= end:
                break
            m = search(buf, le + 1)
        if not total:
            return data, 0
        out.append(buf[last:])
        return b"".join(out), total

    def _by_line(self, data: memoryview) -> tuple[Any, int]:
        d = self.delimiter
        lines = bytes(data).split(d)
        tail = lines.pop()                # b"" after a final delimiter, else the open last line
        if self.may_be_empty:
            regex, template, count = self.regex, self.template, self.count
            results = [_sed_subn(regex, template, line, count) for line in lines]
        else:
            results = list(map(self.regex.subn, repeat(self.template), lines,
                               repeat(self.count)))
        total = sum([n for _, n in results])
        body = d.join([r for r, _ in results])
        if lines:
            body += d
        if tail:
            new, n = self._sub_line(tail)
            total += n
            body += new
        if not total:
            return data, 0
        return body, total

    def initial(self) -> int:
        return 0

    def fold(self, acc: int, summary: Any) -> int:
        return acc + (summary or 0)

    def result(self, acc: int) -> dict[str, int]:
        return {"replacements": acc}


def _sed_subn(regex: re.Pattern[bytes], template: bytes, line: bytes,
              count: int) -> tuple[bytes, int]:
    """regex.subn with sed's rule for empty matches: none right after the previous match
    (Python's own sub allows one there since 3.7: `a*` on `baac` gives -b--c-, sed -b-c-)."""
    out: list[bytes] = []
    last = 0
    n = 0
    prev_end = -1
    for m in regex.finditer(line):
        s, e = m.span()
        if s == e == prev_end:
            continue
        out.append(line[last:s])
        out.append(m.expand(template))
        last = prev_end = e
        n += 1
        if n == count:
            break
    if not n:
        return line, 0
    out.append(line[last:])
    return b"".join(out), n


# ----------------------------------------------------------------------------- pattern analysis
_NL = 10
# character categories that hold a newline
_NL_CATEGORIES = {_C.CATEGORY_SPACE, _C.CATEGORY_NOT_DIGIT, _C.CATEGORY_NOT_WORD,
                  _C.CATEGORY_LINEBREAK, _C.CATEGORY_UNI_SPACE, _C.CATEGORY_UNI_NOT_DIGIT,
                  _C.CATEGORY_UNI_NOT_WORD, _C.CATEGORY_UNI_LINEBREAK}
_SAFE_CATEGORIES = {_C.CATEGORY_DIGIT, _C.CATEGORY_NOT_SPACE, _C.CATEGORY_WORD,
                    _C.CATEGORY_NOT_LINEBREAK, _C.CATEGORY_UNI_DIGIT, _C.CATEGORY_UNI_NOT_SPACE,
                    _C.CATEGORY_UNI_WORD, _C.CATEGORY_UNI_NOT_LINEBREAK}


def _line_safe(items: list[Any], flags: int) -> bool:
    """True when no part of the pattern can match a newline and it has no \\A or \\Z: then a
    search over a whole chunk finds exactly the matches a search of each line would (a line's
    edges and the newlines around it look the same to ^, $, \\b and lookarounds). Anything
    not understood counts as unsafe."""
    for op, av in items:
        if op is _C.LITERAL:
            if av == _NL:
                return False
        elif op is _C.NOT_LITERAL:
            if av != _NL:
                return False
        elif op is _C.ANY:
            if flags & re.DOTALL:
                return False
        elif op is _C.IN:
            if _set_has_newline(av):
                return False
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT, getattr(_C, "POSSESSIVE_REPEAT", None)):
            if not _line_safe(list(av[2]), flags):
                return False
        elif op is _C.SUBPATTERN:
            _, add, remove, sub = av
            if not _line_safe(list(sub), (flags | add) & ~remove):
                return False
        elif op is _C.BRANCH:
            if not all(_line_safe(list(b), flags) for b in av[1]):
                return False
        elif op in (_C.ASSERT, _C.ASSERT_NOT):
            if not _line_safe(list(av[1]), flags):
                return False
        elif op is getattr(_C, "ATOMIC_GROUP", None):
            if not _line_safe(list(av), flags):
                return False
        elif op is _C.GROUPREF_EXISTS:
            _, yes, no = av
            if not _line_safe(list(yes), flags) or (no is not None and
                                                     not _line_safe(list(no), flags)):
                return False
        elif op is _C.AT:
            if av in (_C.AT_BEGINNING_STRING, _C.AT_END_STRING):
                return False
        elif op is _C.GROUPREF:
            pass              # repeats what its group matched: safe when the group is
        else:
            return False
    return True


def _set_has_newline(items: list[Any]) -> bool:
    negate = False
    hit = False
    for op, av in items:
        if op is _C.NEGATE:
            negate = True
        elif op is _C.LITERAL:
            hit = hit or av == _NL
        elif op in (_C.RANGE, getattr(_C, "RANGE_UNI_IGNORE", None)):
            hit = hit or av[0] <= _NL <= av[1]
        elif op is _C.CATEGORY:
            if av in _NL_CATEGORIES:
                hit = True
            elif av not in _SAFE_CATEGORIES:
                return True   # unknown: assume the worst
        else:
            return True
    return hit != negate
