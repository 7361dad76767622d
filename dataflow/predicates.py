"""Predicates: the conditions of the `where` stage, compiled once into Python closures. Pure.

A predicate is a mapping, `field -> condition`, and every entry must hold:

    {status: {gte: 500}, method: GET}
    {any: [{status: {gte: 500}}, {path: {startswith: /admin}}]}
    {not: {method: {in: [GET, HEAD]}}}
    {duration: {gte: 0.5, lt: 10}, user.id: {exists: true}}

Rules:
- A condition is a scalar (equality: `method: GET`, `status: 500`) or a mapping of operators,
  all of which must hold: eq, ne, gt, gte, lt, lte, in, not_in, contains, startswith,
  endswith, regex, exists. `any: [...]`, `all: [...]` and `not: {...}` combine predicates
  (at the top, with field mappings inside) and conditions (inside a field: `status: {any:
  [{lt: 200}, {gte: 500}]}`).
- Numbers compare numerically whatever the field holds: CSV text "500" equals 500 and is
  >= 499 (`records.number`). A value that is not a number fails a numeric comparison; it is
  not an error. Text operands compare as text (gt/lt lexicographically: ISO dates work).
- `null` (eq) matches a missing field or JSON null, and in CSV and lines an empty field.
  `exists: true` holds when the field is present and not null.
- contains/startswith/endswith/regex apply to text (regex is a search, Python `re`); on a
  JSON list, `contains` tests membership. startswith/endswith take a text or a list of them.
- Field names: `status`, `user.id` (nested JSON), a number (`9`, `$9`) for CSV columns and
  whitespace fields of a line, `$0` for the whole line; a leading `.` is dropped (`.any` is
  the field named any). Which of these a format has is the getter's business (records.py).
- Errors (an unknown operator, with the closest one suggested; `in` without a list; a bad
  regex; a field the format cannot have) raise PredicateError, whose `path` is where the
  error is within the predicate, e.g. ["status", "gte"], for config messages.

`parse(spec)` checks a predicate without knowing the format (at construction); `build(tree,
getter, kind)` turns it into a function record -> bool for one format.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Callable

from .records import number

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "startswith",
             "endswith", "regex", "exists")
COMBINATORS = ("any", "all", "not")
_NUMERIC = (int, float)


class OptionError(ValueError):
    """A bad stage option. `path` locates it within the stage's options (["fields", 1],
    ["status", "gte"]) so that a config message can point at `stages[2].where.status.gte`;
    `field` is the same path as text ("status.gte") and `reason` the message (config.py's
    convention); str() is the message alone."""

    def __init__(self, message: str, path: list[str | int] | tuple = ()):
        super().__init__(message)
        self.message = message
        self.path = list(path)

    @property
    def reason(self) -> str:
        return self.message

    @property
    def field(self) -> str | None:
        if not self.path:
            return None
        where = ""
        for p in self.path:
            where += f"[{p}]" if isinstance(p, int) else (f".{p}" if where else str(p))
        return where


class PredicateError(OptionError):
    """A predicate that cannot be compiled; `path` locates the error inside it."""


# ----------------------------------------------------------------------------- parsing
# The checked tree: ("and", [nodes]) | ("or", [nodes]) | ("not", node) | ("field", name, path,
# cond); a condition: ("and", [conds]) | ("or", [conds]) | ("not", cond) | ("op", op, operand,
# path). Paths are kept for the errors build() may still raise (a field the format lacks).

def parse(spec: Any, path: tuple = ()) -> tuple:
    """Check a predicate (a mapping) and return its tree. Raises PredicateError."""
    if not isinstance(spec, dict):
        raise PredicateError(f"a predicate is a mapping of field: condition (e.g. "
                             f"{{status: {{gte: 500}}}}), got {_show(spec)}", path)
    if not spec:
        raise PredicateError("an empty predicate: name at least one field and its condition",
                             path)
    nodes = []
    for key, value in spec.items():
        here = path + (key,)
        if not isinstance(key, str):
            raise PredicateError(f"a field name is text, got {key!r}", here)
        if key in ("any", "all"):
            items = _nonempty_list(value, key, here)
            subs = [parse(item, here + (i,)) for i, item in enumerate(items)]
            nodes.append(("or" if key == "any" else "and", subs))
        elif key == "not":
            nodes.append(("not", parse(value, here)))
        else:
            if key in OPERATORS:
                raise PredicateError(f"{key!r} is an operator, and operators go inside a "
                                     f"field's condition: {{FIELD: {{{key}: ...}}}} (for a field "
                                     f"named {key}, write '.{key}')", here)
            if not key or key == ".":
                raise PredicateError("an empty field name", here)
            nodes.append(("field", key, here, _condition(value, here)))
    return nodes[0] if len(nodes) == 1 else ("and", nodes)


def _condition(value: Any, path: tuple) -> tuple:
    if isinstance(value, list):
        raise PredicateError(f"a list is not a condition: to match any of these values write "
                             f"{{in: {_show(value)}}}", path)
    if not isinstance(value, dict):
        return ("op", "eq", _scalar(value, "eq", path), path)
    if not value:
        raise PredicateError("an empty condition: give an operator, e.g. {eq: ...}", path)
    conds = []
    for op, operand in value.items():
        here = path + (op,)
        if op in ("any", "all"):
            items = _nonempty_list(operand, op, here)
            conds.append(("or" if op == "any" else "and",
                          [_condition(item, here + (i,)) for i, item in enumerate(items)]))
        elif op == "not":
            conds.append(("not", _condition(operand, here)))
        elif op in OPERATORS:
            conds.append(("op", op, _operand(op, operand, here), here))
        else:
            close = difflib.get_close_matches(str(op), OPERATORS + COMBINATORS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else \
                f"; operators: {', '.join(OPERATORS)}, and any/all/not"
            typo = bool(close) and difflib.SequenceMatcher(None, str(op), close[0]).ratio() >= 0.75
            nested = f" (a nested field is written with dots: '{path[-1]}.{op}')" \
                if path and isinstance(path[-1], str) and path[-1] not in COMBINATORS \
                and not typo else ""
            raise PredicateError(f"unknown operator {op!r}{hint}{nested}", here)
    return conds[0] if len(conds) == 1 else ("and", conds)


def _nonempty_list(value: Any, key: str, path: tuple) -> list:
    if not isinstance(value, list):
        raise PredicateError(f"{key} takes a list, got {_show(value)}", path)
    if not value:
        raise PredicateError(f"{key} needs at least one item", path)
    return value


def _scalar(value: Any, op: str, path: tuple) -> Any:
    if isinstance(value, (dict, list)) and op != "eq":
        raise PredicateError(f"{op} takes a single value, got {_show(value)}", path)
    if not isinstance(value, (str, int, float, bool, type(None), dict, list)):
        # YAML dates and the like: compare them as the text that was written
        return str(value)
    return value


def _operand(op: str, value: Any, path: tuple) -> Any:
    if op in ("eq", "ne"):
        return _scalar(value, op, path)
    if op in ("gt", "gte", "lt", "lte"):
        value = _scalar(value, op, path)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise PredicateError(f"{op} compares with a number or a text, got {_show(value)}",
                                 path)
        return value
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            raise PredicateError(f"{op} takes a list of values, e.g. {{{op}: [GET, HEAD]}}, "
                                 f"got {_show(value)}", path)
        return [_scalar(v, op, path + (i,)) for i, v in enumerate(value)]
    if op == "contains":
        value = _scalar(value, op, path)
        if isinstance(value, bool) or value is None:
            raise PredicateError(f"contains takes a text (or a number, for lists), got "
                                 f"{_show(value)}", path)
        return value
    if op in ("startswith", "endswith"):
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise PredicateError(f"{op} takes a text or a list of texts, got {_show(value)}",
                                 path)
        return tuple(items)
    if op == "regex":
        if not isinstance(value, str):
            raise PredicateError(f"regex takes a text (a Python regular expression), got "
                                 f"{_show(value)}", path)
        try:
            re.compile(value)
        except re.error as e:
            raise PredicateError(f"invalid regular expression: {e}", path) from None
        return value
    if op == "exists":
        if not isinstance(value, bool):
            raise PredicateError(f"exists takes true or false, got {_show(value)}", path)
        return value
    raise AssertionError(op)  # pragma: no cover - parse() checked the name


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- building
def build(tree: tuple, getter: Callable[[str], Callable[[Any], Any]],
          kind: str = "jsonl") -> Callable[[Any], bool]:
    """The function record -> bool for `tree` (from parse) over records of `kind`.

    `getter(name)` returns a function record -> the field's value (None when missing); it may
    raise ValueError for a field the format cannot have, which becomes a PredicateError at
    that field's path. `kind` "lines" means field values are bytes."""
    return _Builder(getter, kind).node(tree)


def compile_predicate(spec: Any, getter: Callable[[str], Callable[[Any], Any]],
                      kind: str = "jsonl") -> Callable[[Any], bool]:
    """parse() then build()."""
    return build(parse(spec), getter, kind)


class _Builder:
    def __init__(self, getter: Callable[[str], Callable[[Any], Any]], kind: str):
        self.getter = getter
        self.kind = kind
        self.binary = kind == "lines"          # field values are bytes
        self.text: type = bytes if self.binary else str
        self.empty_is_null = kind != "jsonl"   # CSV and lines have no null: empty is the null

    def t(self, s: str) -> Any:
        """A text operand in the type of the field values."""
        return s.encode("utf-8", "surrogateescape") if self.binary else s

    # -- predicates over records
    def node(self, tree: tuple) -> Callable[[Any], bool]:
        tag = tree[0]
        if tag == "field":
            _, name, path, cond = tree
            try:
                get = self.getter(name)
            except PredicateError:
                raise
            except ValueError as e:
                raise PredicateError(str(e), path) from None
            test = self.cond(cond)
            return lambda r: test(get(r))
        if tag == "not":
            inner = self.node(tree[1])
            return lambda r: not inner(r)
        parts = [self.node(t) for t in tree[1]]
        return _all(parts) if tag == "and" else _any(parts)

    # -- conditions over one value
    def cond(self, tree: tuple) -> Callable[[Any], bool]:
        tag = tree[0]
        if tag == "op":
            return self.op(tree[1], tree[2], tree[3])
        if tag == "not":
            inner = self.cond(tree[1])
            return lambda v: not inner(v)
        parts = [self.cond(t) for t in tree[1]]
        return _all(parts) if tag == "and" else _any(parts)

    def op(self, op: str, x: Any, path: tuple) -> Callable[[Any], bool]:
        if op == "eq":
            return self.eq(x)
        if op == "ne":
            eq = self.eq(x)
            return lambda v: not eq(v)
        if op in ("gt", "gte", "lt", "lte"):
            return self.compare(op, x)
        if op in ("in", "not_in"):
            member = self.member(x)
            return member if op == "in" else (lambda v: not member(v))
        T = self.text
        if op == "contains":
            if isinstance(x, str):
                s = self.t(x)
                return lambda v: (s in v) if isinstance(v, T) else (
                    isinstance(v, list) and x in v)
            return lambda v: isinstance(v, list) and x in v
        if op in ("startswith", "endswith"):
            ends = tuple(self.t(s) for s in x)
            if op == "startswith":
                return lambda v: isinstance(v, T) and v.startswith(ends)
            return lambda v: isinstance(v, T) and v.endswith(ends)
        if op == "regex":
            try:
                search = re.compile(self.t(x)).search
            except re.error as e:  # pragma: no cover - checked by parse(); bytes may differ
                raise PredicateError(f"invalid regular expression: {e}", path) from None
            return lambda v: isinstance(v, T) and search(v) is not None
        if op == "exists":
            if x:
                return lambda v: v is not None
            return lambda v: v is None
        raise AssertionError(op)  # pragma: no cover

    def eq(self, x: Any) -> Callable[[Any], bool]:
        T = self.text
        if x is None:
            if self.empty_is_null:
                empty = self.t("")
                return lambda v: v is None or v == empty
            return lambda v: v is None
        if isinstance(x, bool):
            word = self.t("true" if x else "false")
            if self.empty_is_null:
                return lambda v: v is x or (isinstance(v, T) and v.lower() == word)
            return lambda v: v is x
        if isinstance(x, _NUMERIC):
            def eq_number(v: Any) -> bool:
                if v.__class__ is int or v.__class__ is float:
                    return v == x
                n = number(v)
                return n is not None and n == x
            return eq_number
        if isinstance(x, str):
            s = self.t(x)
            return lambda v: v == s
        return lambda v: v == x   # a JSON list or object: deep equality

    def compare(self, op: str, x: Any) -> Callable[[Any], bool]:
        import operator
        cmp = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
               "lte": operator.le}[op]
        if isinstance(x, str):
            T = self.text
            s = self.t(x)
            return lambda v: isinstance(v, T) and cmp(v, s)

        def compare_number(v: Any) -> bool:
            if v.__class__ is int or v.__class__ is float:
                return cmp(v, x)
            n = number(v)
            return n is not None and cmp(n, x)
        return compare_number

    def member(self, items: list[Any]) -> Callable[[Any], bool]:
        texts = {self.t(x) for x in items if isinstance(x, str)}
        numbers = {x for x in items if isinstance(x, _NUMERIC) and not isinstance(x, bool)}
        others = [self.eq(x) for x in items
                  if x is None or isinstance(x, (bool, list, dict))]
        T = self.text

        def member(v: Any) -> bool:
            if v.__class__ is T:
                if v in texts:
                    return True
                if numbers:
                    n = number(v)
                    if n is not None and n in numbers:
                        return True
            elif numbers and (v.__class__ is int or v.__class__ is float):
                if v in numbers:
                    return True
            for eq in others:
                if eq(v):
                    return True
            return False
        return member


def _all(parts: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda x: a(x) and b(x)

    def every(x: Any) -> bool:
        for p in parts:
            if not p(x):
                return False
        return True
    return every


def _any(parts: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda x: a(x) or b(x)

    def some(x: Any) -> bool:
        for p in parts:
            if p(x):
                return True
        return False
    return some


def fields(tree: tuple) -> list[str]:
    """The field names a predicate tree reads, in order, once each."""
    out: list[str] = []

    def walk(node: tuple) -> None:
        if node[0] == "field":
            if node[1] not in out:
                out.append(node[1])
        elif node[0] == "not":
            walk(node[1])
        else:
            for sub in node[1]:
                walk(sub)
    walk(tree)
    return out


def field_key(name: str, kind: str, columns: tuple[str, ...] | None = None) -> str | int:
    """What a predicate's field name means for a format: `$9` and `9` are field numbers
    (CSV columns, fields of a line) unless a CSV header has a column of that name; `.name` is
    `name`; `$0` is 0, the whole line."""
    if name.startswith("$") and name[1:].isdigit():
        return int(name[1:])
    if name.startswith(".") and len(name) > 1:
        return name[1:]
    if name.isdigit() and kind != "jsonl" and not (columns and name in columns):
        return int(name)
    return name
