"""The predicate compiler (dataflow/predicates.py): errors with their paths, the semantics of
every operator on JSON values, CSV text and line bytes, and compiled closures checked against
a plain tree-walking interpreter on random predicates and records."""
from __future__ import annotations

import random
import re

import pytest

from dataflow.predicates import (OPERATORS, OptionError, PredicateError, build,
                                 compile_predicate, field_key, parse)
from dataflow.records import RecordFormat, number


def json_getter(name):
    return RecordFormat(kind="jsonl").getter(name)


def check(spec, record, kind="jsonl", columns=None):
    if kind == "jsonl":
        get = json_getter
    else:
        fmt = RecordFormat(kind=kind, header=columns is not None, columns=columns)

        def get(name):
            return fmt.getter(field_key(name, kind, columns))
    return compile_predicate(spec, get, kind)(record)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("spec, path, words", [
    ({"status": {"gtee": 500}}, ["status", "gtee"], "unknown operator 'gtee'; did you mean 'gte'"),
    ({"status": {"startwith": "x"}}, ["status", "startwith"], "did you mean 'startswith'"),
    ({"user": {"id": 3}}, ["user", "id"], "nested field is written with dots: 'user.id'"),
    ({"method": {"in": "GET"}}, ["method", "in"], "in takes a list"),
    ({"method": {"not_in": 5}}, ["method", "not_in"], "not_in takes a list"),
    ({"path": {"regex": "(unclosed"}}, ["path", "regex"], "invalid regular expression"),
    ({"any": [{"a": 1}, {"b": {"regex": "["}}]}, ["any", 1, "b", "regex"], "regular expression"),
    ({"any": {"a": 1}}, ["any"], "any takes a list"),
    ({"all": []}, ["all"], "at least one"),
    ({"not": [1]}, ["not"], "a predicate is a mapping"),
    ({}, [], "empty predicate"),
    ({"a": {}}, ["a"], "empty condition"),
    ({"method": ["GET", "HEAD"]}, ["method"], "{in: ['GET', 'HEAD']}"),
    ({"gte": 5}, ["gte"], "operators go inside a field"),
    ({"a": {"gt": True}}, ["a", "gt"], "compares with a number or a text"),
    ({"a": {"gt": [1]}}, ["a", "gt"], "single value"),
    ({"a": {"exists": "yes"}}, ["a", "exists"], "true or false"),
    ({"a": {"startswith": 5}}, ["a", "startswith"], "a text or a list of texts"),
    ({"a": {"contains": None}}, ["a", "contains"], "contains takes"),
    ({"a": {"not": {"lt": 1, "bad": 2}}}, ["a", "not", "bad"], "unknown operator 'bad'"),
    ({"a": {"any": [{"eq": 1}, {"regex": 7}]}}, ["a", "any", 1, "regex"], "regex takes a text"),
])
def test_bad_predicates_name_the_place(spec, path, words):
    with pytest.raises(PredicateError) as e:
        parse(spec)
    assert e.value.path == path
    assert words in str(e.value)
    assert isinstance(e.value, OptionError) and isinstance(e.value, ValueError)
    if path:
        assert e.value.field == re.sub(r"\.\[", "[", ".".join(
            f"[{p}]" if isinstance(p, int) else p for p in path))


def test_a_field_the_format_lacks_fails_at_build_with_its_path():
    tree = parse({"any": [{"status": 500}, {"ip": {"eq": "x"}}]})
    fmt = RecordFormat(kind="lines")
    with pytest.raises(PredicateError) as e:
        build(tree, lambda name: fmt.getter(field_key(name, "lines")), "lines")
    assert e.value.path == ["any", 0, "status"]
    assert "lines have no named fields" in str(e.value)
    csv = RecordFormat(kind="csv", header=True, columns=("a", "b"))
    with pytest.raises(PredicateError) as e:
        build(parse({"a": 1, "zz": 2}), lambda n: csv.getter(field_key(n, "csv", csv.columns)),
              "csv")
    assert e.value.path == ["zz"] and "columns: a, b" in str(e.value)


def test_field_keys():
    assert field_key("$9", "lines") == 9
    assert field_key("9", "lines") == 9
    assert field_key("9", "csv", ("a", "9")) == "9"
    assert field_key("9", "csv", ("a", "b")) == 9
    assert field_key("9", "jsonl") == "9"
    assert field_key("$0", "lines") == 0
    assert field_key(".any", "jsonl") == "any"
    assert field_key("user.id", "jsonl") == "user.id"


# ----------------------------------------------------------------------------- semantics
def test_equality_and_numbers_on_json():
    r = {"status": 500, "method": "GET", "ok": True, "none": None, "code": "500",
         "ratio": 0.5, "tags": ["a", "b"], "user": {"id": 7, "name": "ann"}}
    assert check({"status": 500}, r)
    assert check({"status": 500.0}, r)
    assert not check({"status": "500"}, r)          # a text operand compares as text
    assert check({"code": 500}, r)                   # a number operand: numerically
    assert check({"code": "500"}, r)
    assert check({"method": "GET", "status": {"gte": 500, "lt": 600}}, r)
    assert not check({"method": "GET", "status": {"gt": 500}}, r)
    assert check({"ok": True}, r) and not check({"ok": False}, r)
    assert not check({"status": True}, r)            # true is not 1
    assert check({"none": None}, r) and check({"missing": None}, r)
    assert not check({"none": {"exists": True}}, r) and check({"status": {"exists": True}}, r)
    assert check({"missing": {"exists": False}}, r)
    assert check({"user.id": 7, "user.name": {"startswith": "a"}}, r)
    assert check({"tags": {"eq": ["a", "b"]}}, r)
    assert check({"tags": {"contains": "b"}}, r) and not check({"tags": {"contains": "c"}}, r)
    assert check({"ratio": {"gt": 0.25, "lte": 0.5}}, r)
    assert check({"method": {"ne": "POST"}}, r) and not check({"method": {"ne": "GET"}}, r)
    assert not check({"method": {"gt": 5}}, r)       # not a number: fails, no error
    assert not check({"status": {"gt": "a"}}, r)     # a number is not text
    assert check({"method": {"gt": "GEA", "lt": "GEZ"}}, r)


def test_membership_text_and_regex():
    r = {"method": "GET", "status": 404, "path": "/api/v1/users", "n": "12"}
    assert check({"method": {"in": ["GET", "HEAD"]}}, r)
    assert not check({"method": {"not_in": ["GET", "HEAD"]}}, r)
    assert check({"status": {"in": [404, 410]}, "n": {"in": [12]}}, r)
    assert not check({"status": {"in": ["404"]}}, r)
    assert check({"missing": {"in": [None, 1]}}, r) and check({"missing": {"not_in": [1]}}, r)
    assert check({"path": {"contains": "/v1/"}}, r)
    assert check({"path": {"startswith": ["/x", "/api"]}, "path ": {"exists": False}}, r)
    assert check({"path": {"endswith": "users"}}, r)
    assert check({"path": {"regex": r"v\d/"}}, r) and not check({"path": {"regex": "^v1"}}, r)
    assert not check({"status": {"regex": "4"}}, r)  # regex is for text


def test_combinators_at_both_levels():
    r = {"status": 503, "method": "GET", "path": "/health"}
    assert check({"any": [{"status": {"lt": 200}}, {"status": {"gte": 500}}]}, r)
    assert check({"status": {"any": [{"lt": 200}, {"gte": 500}]}}, r)
    assert not check({"status": {"not": {"gte": 500}}}, r)
    assert check({"not": {"path": {"startswith": "/api"}}}, r)
    assert check({"all": [{"method": "GET"}, {"not": {"status": 200}}]}, r)
    assert not check({"all": [{"method": "GET"}, {"any": [{"status": 200}, {"path": "/"}]}]}, r)
    assert check({"status": {"all": [{"gt": 500}, {"not": {"in": [504]}}], "ne": 500}}, r)
    assert check({"status": {"any": [5, 503]}}, r)


def test_csv_text_compares_numerically_and_empty_is_null():
    cols = ("status", "bytes", "name", "flag")
    row = ["500", "1e3", "", "TRUE"]
    assert check({"status": {"gte": 499}}, row, "csv", cols)
    assert check({"status": 500, "bytes": 1000}, row, "csv", cols)
    assert check({"status": "500"}, row, "csv", cols)
    assert not check({"name": {"gt": 0}}, row, "csv", cols)
    assert check({"name": None}, row, "csv", cols)
    assert check({"flag": True}, row, "csv", cols)
    assert check({"2": {"lt": 1001}}, row, "csv", cols)
    assert check({"status": {"in": [404, 500]}}, row, "csv", cols)
    assert check({"status": {"regex": "^5"}}, row, "csv", cols)
    short = ["404"]
    assert check({"bytes": None, "name": {"exists": False}}, short, "csv", cols)


def test_lines_fields_are_bytes():
    line = b'1.2.3.4 - - [x] "GET /a HTTP/1.1" 503 99'
    assert check({"$1": "1.2.3.4"}, line, "lines")
    assert check({"8": {"gte": 500}}, line, "lines")
    assert check({"$5": {"startswith": '"G'}}, line, "lines")
    assert check({"$6": {"regex": "^/a$"}, "$8": {"in": [503]}}, line, "lines")
    assert check({"$6": {"contains": "a"}, "$9": 99}, line, "lines")
    assert check({"$20": None}, line, "lines")
    assert not check({"$20": {"exists": True}}, line, "lines")


# ----------------------------------------------------------------------------- random trees
KEYS = ["a", "b", "c", "n.x"]
VALUES = [0, 1, 2, 5, -3, 2.5, "x", "ab", "b", "", "10", "2", True, False, None]


def rand_operand(rng, op):
    if op in ("in", "not_in"):
        return [rng.choice(VALUES) for _ in range(rng.randint(1, 3))]
    if op in ("gt", "gte", "lt", "lte"):
        return rng.choice([0, 1, 2, 2.5, -1, "a", "b", "10"])
    if op == "contains":
        return rng.choice(["a", "b", "x", 1])
    if op in ("startswith", "endswith"):
        return rng.choice(["a", "b", ["a", "x"], ""])
    if op == "regex":
        return rng.choice(["^a", "b$", "[0-9]", "x|y"])
    if op == "exists":
        return rng.choice([True, False])
    return rng.choice(VALUES)


def rand_cond(rng, depth):
    r = rng.random()
    if depth > 0 and r < 0.15:
        return {"any": [rand_cond(rng, depth - 1) for _ in range(rng.randint(1, 3))]}
    if depth > 0 and r < 0.25:
        return {"not": rand_cond(rng, depth - 1)}
    if r < 0.4:
        return rng.choice(VALUES)
    ops = rng.sample(OPERATORS, rng.randint(1, 2))
    return {op: rand_operand(rng, op) for op in ops}


def rand_pred(rng, depth=2):
    r = rng.random()
    if depth > 0 and r < 0.2:
        return {rng.choice(["any", "all"]): [rand_pred(rng, depth - 1)
                                             for _ in range(rng.randint(1, 3))]}
    if depth > 0 and r < 0.3:
        return {"not": rand_pred(rng, depth - 1)}
    keys = rng.sample(KEYS, rng.randint(1, 2))
    return {k: rand_cond(rng, depth) for k in keys}


def rand_record(rng):
    rec = {}
    for k in ("a", "b", "c"):
        if rng.random() < 0.85:
            rec[k] = rng.choice(VALUES + [["a", "b"], [1, 2], {"x": 1}])
    if rng.random() < 0.5:
        rec["n"] = {"x": rng.choice(VALUES)} if rng.random() < 0.8 else 3
    return rec


def reference(spec, rec):
    """The meaning of a predicate, spelled out slowly: walk the mapping for every record."""
    for key, value in spec.items():
        if key == "any":
            ok = any(reference(s, rec) for s in value)
        elif key == "all":
            ok = all(reference(s, rec) for s in value)
        elif key == "not":
            ok = not reference(value, rec)
        else:
            v = rec
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            ok = ref_cond(value, v)
        if not ok:
            return False
    return True


def ref_eq(x, v):
    if x is None:
        return v is None
    if isinstance(x, bool):
        return v is x
    if isinstance(x, (int, float)):
        n = number(v)
        return n is not None and n == x
    return type(v) is type(x) and v == x


def ref_cond(cond, v):
    if not isinstance(cond, dict):
        return ref_eq(cond, v)
    for op, x in cond.items():
        if op == "any":
            ok = any(ref_cond(c, v) for c in x)
        elif op == "all":
            ok = all(ref_cond(c, v) for c in x)
        elif op == "not":
            ok = not ref_cond(x, v)
        elif op == "eq":
            ok = ref_eq(x, v)
        elif op == "ne":
            ok = not ref_eq(x, v)
        elif op in ("gt", "gte", "lt", "lte"):
            import operator as o
            f = {"gt": o.gt, "gte": o.ge, "lt": o.lt, "lte": o.le}[op]
            if isinstance(x, str):
                ok = isinstance(v, str) and f(v, x)
            else:
                n = number(v)
                ok = n is not None and f(n, x)
        elif op in ("in", "not_in"):
            ok = any(ref_eq(i, v) for i in x)
            if op == "not_in":
                ok = not ok
        elif op == "contains":
            ok = (isinstance(v, str) and isinstance(x, str) and x in v) or \
                (isinstance(v, list) and x in v)
        elif op == "startswith":
            ok = isinstance(v, str) and v.startswith(tuple(x) if isinstance(x, list) else x)
        elif op == "endswith":
            ok = isinstance(v, str) and v.endswith(tuple(x) if isinstance(x, list) else x)
        elif op == "regex":
            ok = isinstance(v, str) and re.search(x, v) is not None
        elif op == "exists":
            ok = (v is not None) == x
        else:
            raise AssertionError(op)
        if not ok:
            return False
    return True


def test_compiled_predicates_agree_with_a_tree_walking_interpreter():
    rng = random.Random(11)
    records = [rand_record(rng) for _ in range(200)]
    kept_any = 0
    for _ in range(400):
        spec = rand_pred(rng)
        test = compile_predicate(spec, json_getter, "jsonl")
        for rec in records:
            want = reference(spec, rec)
            assert test(rec) is want or bool(test(rec)) == want, (spec, rec)
            kept_any += want
    assert 0 < kept_any < 400 * 200   # the random trees are neither all true nor all false


def test_compiling_is_once_per_predicate_not_per_record():
    calls = []

    def getter(name):
        calls.append(name)
        return json_getter(name)

    test = compile_predicate({"a": {"gt": 1}, "any": [{"b": 1}, {"c": {"in": [1, 2]}}]},
                             getter)
    for i in range(100):
        test({"a": i, "b": 1})
    assert sorted(calls) == ["a", "b", "c"]
