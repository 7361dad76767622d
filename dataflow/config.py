"""Job files: YAML -> strict msgspec Structs -> runtime objects. Nothing starts on a bad config.

Rules:
- Unknown keys, wrong types and bad values are errors, reported as
  `job.yaml:7: stages[0].grep.pattern: <what is wrong>` (the line comes from the YAML node).
- YAML is loaded safely and checked before anything is built (`_check_node`): only plain tags
  (never `!!python/...`), text keys, no duplicate key (PyYAML would keep the last silently),
  integers in decimal (YAML 1.1 reads `0755` as 493, `0x10` as 16, `1:30` as 90), at most
  MAX_BYTES of text and MAX_VALUES values once aliases are expanded ("billion laughs").
- YAML 1.1 booleans (yes/no/on/off) are accepted where a boolean is expected (`ordered: no`);
  where text is expected, a boolean, number or date is refused with a hint to quote it.
- `--set path=value` overrides apply before validation; values are read as YAML scalars.
- Stages are one-key mappings (`- grep: {pattern: x}`); the key is a registry name, the value
  is checked against that transform's `Options` Struct. A bare name means no options.
- Relative paths are relative to the current directory, as on a command line.
"""
from __future__ import annotations

import contextvars
import difflib
import re
from typing import Any, Literal

import msgspec
import yaml

from .errors import ConfigError, DataflowError
from .records import bind_chain, placement
from .registry import STAGES, stage_class
from .sizes import parse_duration, parse_size

Size = int | str


class RangeSpec(msgspec.Struct, forbid_unknown_fields=True):
    start: Size = 0
    end: Size | None = None


class GenerateSpec(msgspec.Struct, forbid_unknown_fields=True):
    size: Size
    seed: int = 0


class SourceSpec(msgspec.Struct, forbid_unknown_fields=True):
    file: str | list[str] | None = None     # a path, a glob, or a list of either
    stdin: bool = False
    generate: GenerateSpec | None = None
    split: Literal["lines", "bytes", "jsonl", "csv", "tsv", "fixed"] = "lines"
    delimiter: str = "\n"
    record_start: str | None = None     # lines: a regex that starts a (multi-line) record
    record_size: Size = 0               # fixed: bytes per record
    header: bool | None = None          # csv/tsv: the first row names the columns (default)
    max_record_size: Size = 0
    range: RangeSpec | None = None


class SinkSpec(msgspec.Struct, forbid_unknown_fields=True):
    file: str | None = None
    stdout: bool = False
    null: bool = False
    sync: bool = True  # file: fsync before the rename (durable), as opposed to only atomic


class JobSpec(msgspec.Struct, forbid_unknown_fields=True):
    source: SourceSpec
    stages: list[Any] = []
    sink: SinkSpec = msgspec.field(default_factory=lambda: SinkSpec(stdout=True))
    workers: int | Literal["auto"] = "auto"
    memory_limit: Size = "512MiB"
    chunk_size: Size = "4MiB"
    ordered: bool = True
    max_attempts: int = 4
    chunk_timeout: float | str | None = None  # seconds (or "30s", "5m") one chunk may take
    worker_max_chunks: int | None = None      # replace a worker after this many chunks
    checkpoint_interval: float | str = 10.0   # how often a resumable job saves its progress


class Job(msgspec.Struct):
    """A validated job with its runtime objects built."""

    spec: JobSpec
    source: Any
    stages: list[Any]
    sink: Any
    file: str = ""


# ----------------------------------------------------------------------------- YAML
# Limits of a job document: a log file given by mistake, or a "billion laughs" document (nested
# anchors and aliases: a few hundred bytes that expand to 9^9 values), is refused up front.
MAX_BYTES = 1 << 20
MAX_VALUES = 100_000            # values once aliases are expanded (each use counts)
MAX_DEPTH = 50
_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("null", "bool", "int", "float", "str", "timestamp", "seq",
                                  "map", "merge")}
_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9_]*)")
_KIND = {"null": "null", "bool": "a boolean", "int": "a number", "float": "a number",
         "date": "a date", "datetime": "a date", "timestamp": "a date", "str": "text",
         "array": "a list", "object": "a mapping"}      # YAML tags and msgspec's type names


def _too_deep(file: str, line: int) -> ConfigError:
    return ConfigError(f"the job nests more than {MAX_DEPTH} levels deep: refused, a job is a "
                       f"short document", file=file, line=line)


class _Loader(yaml.SafeLoader):
    """Safe loader that stops composing past MAX_DEPTH levels (the composer recurses)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.depth >= MAX_DEPTH:
            raise _too_deep(self.name, self.peek_event().start_mark.line + 1)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_node(loader: _Loader, node: Any, parts: list[str | int], file: str,
                count: list[int]) -> None:
    """Refuse what YAML would accept silently or dangerously, naming the path and line.

    Only plain tags (no `!!python/...`); keys are text and unique; numbers are decimal (YAML 1.1
    reads 0755 as 493, 0x10 and 1:30 as numbers too); aliases expand to at most MAX_VALUES
    values and MAX_DEPTH levels (a recursive alias to neither).
    """
    count[0] += 1
    line = node.start_mark.line + 1
    if count[0] > MAX_VALUES:
        raise ConfigError(f"the job expands to more than {MAX_VALUES} values (each use of an "
                          f"alias such as *name counts): refused, a job is a short document",
                          file=file, line=line)
    if len(parts) > MAX_DEPTH:
        raise _too_deep(file, line)
    if node.tag not in _PLAIN_TAGS:
        tag = node.tag.replace(_TAG, "!!", 1) if node.tag.startswith(_TAG) else node.tag
        raise ConfigError(f"the tag {tag} is not allowed: a job holds only plain values "
                          f"(text, numbers, booleans, lists, mappings)",
                          path=_format_path(parts), file=file, line=line)
    if isinstance(node, yaml.ScalarNode):
        text = node.value
        if (node.tag == _TAG + "int" and not _DECIMAL.fullmatch(text)
                or node.tag == _TAG + "float" and ":" in text):
            base = ("hexadecimal" if "x" in text else "binary" if "b" in text else
                    "base 60" if ":" in text else "octal")
            raise ConfigError(f"YAML 1.1 reads {text} as the {base} number "
                              f"{loader.construct_object(node)}: write numbers in decimal, or "
                              f"quote it ('{text}') to keep the text",
                              path=_format_path(parts), file=file, line=line)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_node(loader, item, parts + [i], file, count)
    else:
        first: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if key.tag == _TAG + "merge":           # `<<: *defaults`: its keys may be overridden
                _check_node(loader, value, parts, file, count)
                continue
            if key.tag == _TAG + "null" and key.value == "null":
                key.tag = _TAG + "str"   # `sink: {null: true}`: the word, never YAML's null
            if not isinstance(key, yaml.ScalarNode):
                raise ConfigError("a key must be text, not a list or mapping",
                                  path=_format_path(parts), file=file, line=line)
            here = parts + [key.value]
            _check_node(loader, key, here, file, count)
            if key.tag != _TAG + "str":
                kind = _KIND.get(key.tag.removeprefix(_TAG), "something else")
                raise ConfigError(f"a key must be text, and YAML reads {key.value} as {kind}: "
                                  f"quote it ('{key.value}') or fix the name",
                                  path=_format_path(here), file=file, line=line)
            if key.value in first:
                raise ConfigError(f"duplicate key {key.value!r} (first on line "
                                  f"{first[key.value]}): remove one of them",
                                  path=_format_path(here), file=file, line=line)
            first[key.value] = line
            _check_node(loader, value, here, file, count)


def _load_yaml(text: str, file: str) -> tuple[Any, Any]:
    """(data, root node) of one YAML document, safely and checked; (None, None) if empty."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"the job is larger than {MAX_BYTES >> 20} MiB: a job is a short YAML "
                          f"document (is this the right file?)", file=file)
    loader = _Loader(text)
    loader.name = file
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_node(loader, node, [], file, [0])
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def _parse_yaml(text: str, file: str) -> tuple[Any, Any]:
    try:
        data, node = _load_yaml(text, file)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        problem = f"{e.context}, {e.problem}" if (e.context or "").startswith("expected") \
            else e.problem          # "expected a single document in the stream, but found..."
        if "'\\t'" in problem:
            problem += " (indent with spaces: YAML does not allow tabs)"
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=file) from None
    if data is None:
        raise ConfigError("the job is empty: it needs at least a `source`", file=file)
    if not isinstance(data, dict):
        raise ConfigError(f"a job is a mapping with `source`, `stages`, `sink`..., "
                          f"not a {type(data).__name__}", file=file, line=1)
    return data, node


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _split_path(path: str) -> list[str | int]:
    return [m.group(1) if m.group(1) is not None else int(m.group(2))
            for m in _PART.finditer(path)]


def _find(node: Any, parts: list[str | int]) -> tuple[Any, int | None]:
    """The YAML node at `parts` (None if absent) and the line (1-based) of its key or item, or
    of its deepest ancestor found."""
    if node is None:
        return None, None
    line = node.start_mark.line + 1
    for part in parts:
        nxt = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    nxt = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part < len(node.value):
                nxt = node.value[part]
        if nxt is None:
            return None, line
        if isinstance(part, int):
            line = nxt.start_mark.line + 1
        node = nxt
    return node, line


def _line_of(node: Any, parts: list[str | int]) -> int | None:
    """Line (1-based) of the YAML node at `parts`, or of the deepest ancestor found."""
    return _find(node, parts)[1]


def _format_path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


# paths set by --set in the load under way (a context variable: loads in threads don't mix)
_OVERRIDDEN: contextvars.ContextVar[tuple[list[str | int], ...]] = contextvars.ContextVar(
    "dataflow_overridden", default=())


def _from_override(parts: list[str | int]) -> str | None:
    for o in _OVERRIDDEN.get():
        if parts[:len(o)] == o:
            return _format_path(o)
    return None


def _error(message: str, parts: list[str | int], node: Any, file: str) -> ConfigError:
    override = _from_override(parts)
    if override is not None:
        return ConfigError(f"{message} (the value comes from --set {override}=...)",
                           path=_format_path(parts), file=file)
    return ConfigError(message, path=_format_path(parts), file=file,
                       line=_line_of(node, parts))


# what a value must look like, for messages (msgspec would say `int | str`)
_SIZE = "a size such as 4096, 4MiB or 1.5GB"
_EXPECTED = {"workers": "a positive integer or 'auto'", "max_attempts": "an integer >= 1",
             "worker_max_chunks": "an integer >= 1",
             "chunk_timeout": "a duration such as 30, 30s, 500ms, 5m or 1h",
             "checkpoint_interval": "a duration such as 1, 1s, 500ms or 1m",
             "memory_limit": _SIZE, "chunk_size": _SIZE, "source.max_record_size": _SIZE,
             "source.record_size": _SIZE,
             "source.split": "one of lines, bytes, jsonl, csv, tsv, fixed",
             "source.generate.size": _SIZE, "source.range.start": _SIZE,
             "source.range.end": _SIZE}


def _msgspec_error(e: msgspec.ValidationError, prefix: list[str | int], node: Any,
                   file: str, data: Any = None) -> ConfigError:
    message, _, where = str(e).partition(" - at `")
    rel = _split_path(where.rstrip("`").removeprefix("$")) if where else []
    parts = prefix + rel
    m = re.match(r"Object contains unknown field `(.+)`", message)
    if m:
        field = m.group(1)
        parts = parts + [field]
        message = f"unknown key {field!r}"
        known = _known_fields(prefix + rel, data)
        close = difflib.get_close_matches(field, known, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif known:
            message += f"; expected one of: {', '.join(known)}"
    message = message.replace("Object missing required field", "missing required key")
    message = message.replace("Invalid enum value", "invalid value", 1)
    found = None if _from_override(parts) else _find(node, parts)[0]
    text = found.value if isinstance(found, yaml.ScalarNode) else None  # as written in the file
    m = re.fullmatch(r"Expected `(.+)`, got `(\w+)`|invalid value (.+)", message)
    expected, got, bad = m.groups() if m else (None, None, None)
    if m and _format_path(parts) in _EXPECTED:      # say what the value must look like
        shown = bad or (repr(text) if got == "str" else text) or _KIND.get(got, got)
        message = f"expected {_EXPECTED[_format_path(parts)]}, got {shown}"
    elif expected:
        message = f"expected `{expected}`, got `{got}`"
        if set(expected.split(" | ")) - {"array", "object", "null"} == {"str"} and \
                got in ("bool", "int", "float", "date", "datetime"):
            message += (f": YAML reads {text} as {_KIND[got]}; quote it ('{text}') to keep the "
                        f"text" if text else ": quote the value to keep it as text")
        elif expected == "bool" and got == "str":
            message += ": write true or false, without quotes"
    return _error(message, parts, node, file)


def _known_fields(parts: list[str | int], data: Any) -> list[str]:
    types: dict[str, type] = {"": JobSpec, "source": SourceSpec, "sink": SinkSpec,
                              "source.generate": GenerateSpec, "source.range": RangeSpec}
    key = _format_path([p for p in parts if isinstance(p, str)])
    if len(parts) >= 3 and parts[0] == "stages" and isinstance(parts[2], str):
        cls = stage_class(parts[2]) if parts[2] in STAGES else None
        opts = getattr(cls, "Options", None)
        return list(opts.__struct_fields__) if opts else []
    t = types.get(key)
    return list(t.__struct_fields__) if t else []


# ----------------------------------------------------------------------------- overrides
def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `path=value` (e.g. `sink.file=out.log`, `stages[0].grep.invert=true`)."""
    path, eq, raw = assignment.partition("=")
    if not eq or not path.strip():
        raise ConfigError(f"--set expects path=value, got {assignment!r}")
    parts = _split_path(path.strip())
    try:
        value = _load_yaml(raw, "")[0] if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except ConfigError as e:
        raise ConfigError(f"--set {path}: {e.message}") from None
    kinds = {"sink": ("file", "stdout", "null"), "source": ("file", "stdin", "generate")}
    if len(parts) >= 2 and parts[0] in kinds and parts[1] in kinds[parts[0]]:
        section = data.get(parts[0])
        if isinstance(section, dict):  # --set sink.file=x switches the kind: drop the others
            for other in kinds[parts[0]]:
                if other != parts[1]:
                    section.pop(other, None)
    target: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt_is_index = isinstance(parts[i + 1], int)
        if isinstance(part, int):
            if not isinstance(target, list) or part >= len(target):
                raise ConfigError(f"--set {path}: there is no {_format_path(parts[:i + 1])}")
            target = target[part]
        else:
            if not isinstance(target, dict):
                raise ConfigError(f"--set {path}: {_format_path(parts[:i])} is not a mapping")
            if target.get(part) is None:
                target[part] = [] if nxt_is_index else {}
            target = target[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(target, list) or last > len(target):
            raise ConfigError(f"--set {path}: there is no {_format_path(parts)}")
        if last == len(target):
            target.append(value)
        else:
            target[last] = value
    else:
        if not isinstance(target, dict):
            raise ConfigError(f"--set {path}: {_format_path(parts[:-1])} is not a mapping")
        target[last] = value


# ----------------------------------------------------------------------------- building
def _size(value: Any, parts: list[str | int], node: Any, file: str) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise _error(str(e), parts, node, file) from None


def _build_stage(i: int, entry: Any, node: Any, file: str) -> Any:
    here: list[str | int] = ["stages", i]
    if isinstance(entry, str):
        entry = {entry: None}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError("a stage is a mapping with exactly one key, the stage name "
                          "(e.g. `- grep: {pattern: ERROR}`)", path=_format_path(here),
                          file=file, line=_line_of(node, here))
    (name, options), = entry.items()
    if name not in STAGES:
        close = difflib.get_close_matches(str(name), list(STAGES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else \
            f"; known stages: {', '.join(sorted(STAGES))}"
        raise ConfigError(f"unknown stage {name!r}{hint}", path=_format_path(here),
                          file=file, line=_line_of(node, here))
    cls = stage_class(name)
    here.append(name)
    try:
        opts = msgspec.convert(options or {}, cls.Options)
    except msgspec.ValidationError as e:
        raise _msgspec_error(e, here, node, file) from None
    # Options is a msgspec Struct (its fields are the keyword arguments) or, for a stage whose
    # options are free-form (where: the keys are field names), a mapping type (dict[str, Any])
    kwargs = opts if isinstance(opts, dict) else msgspec.structs.asdict(opts)
    try:
        stage = cls(**kwargs)
        if hasattr(stage, "check"):
            stage.check()
    except re.error as e:
        raise _error(f"invalid regular expression: {e}", here + ["pattern"], node,
                     file) from None
    except (ValueError, TypeError, ImportError, AttributeError) as e:
        field = getattr(e, "field", None) or {
            "grep": "pattern", "python": "callable", "gzip": "backend", "bgzf": "backend",
            "exec": "argv", "replace": "pattern"}.get(name)
        parts = here + ([field] if field else [])
        if isinstance(getattr(e, "path", None), list):   # the place as parts: YAML line found
            parts = here + e.path
        reason = getattr(e, "reason", None) if getattr(e, "field", None) else None
        raise _error(reason or f"{type(e).__name__}: {e}", parts, node, file) from None
    return stage


def _build_source(spec: SourceSpec, node: Any, file: str) -> Any:
    from .sources import FileSource, GenerateSource, StdinSource

    kinds = [k for k, set_ in (("file", spec.file is not None), ("stdin", spec.stdin),
                               ("generate", spec.generate is not None)) if set_]
    if len(kinds) != 1:
        raise ConfigError("the source needs exactly one of `file`, `stdin: true` or "
                          f"`generate`{', got ' + ', '.join(kinds) if kinds else ''}",
                          path="source", file=file, line=_line_of(node, ["source"]))
    if not spec.delimiter:
        raise ConfigError("the delimiter cannot be empty", path="source.delimiter", file=file,
                          line=_line_of(node, ["source", "delimiter"]))
    record = _size(spec.max_record_size, ["source", "max_record_size"], node, file)
    delim = spec.delimiter.encode("utf-8", "surrogateescape")
    fixed = _size(spec.record_size, ["source", "record_size"], node, file)
    for key, wrong in (("record_start", spec.record_start is not None and spec.split != "lines"),
                       ("record_size", bool(fixed) and spec.split != "fixed"),
                       ("header", spec.header is not None and spec.split not in ("csv", "tsv")),
                       ("delimiter", spec.delimiter != "\n" and spec.split != "lines")):
        if wrong:
            goes = {"record_start": "split: lines", "record_size": "split: fixed",
                    "header": "split: csv or tsv", "delimiter": "split: lines"}[key]
            raise ConfigError(f"{key} goes with {goes}, not split: {spec.split}",
                              path=f"source.{key}", file=file,
                              line=_line_of(node, ["source", key]))
    if spec.split == "fixed" and fixed < 1:
        raise ConfigError("split: fixed needs record_size (the bytes in each record)",
                          path="source.record_size", file=file,
                          line=_line_of(node, ["source", "split"]))
    if spec.record_start is not None:
        try:
            re.compile(spec.record_start.encode("utf-8", "surrogateescape"))
        except re.error as e:
            raise ConfigError(f"invalid regular expression: {e}", path="source.record_start",
                              file=file, line=_line_of(node, ["source", "record_start"])) from None
    common = dict(split=spec.split, delimiter=delim, max_record_size=record,
                  record_start=spec.record_start, record_size=fixed, header=spec.header)
    if spec.generate is not None:
        size = _size(spec.generate.size, ["source", "generate", "size"], node, file)
        return GenerateSource(size, spec.generate.seed, **common)
    if spec.stdin:
        return StdinSource(**common)
    start, end = 0, None
    if spec.range is not None:
        start = _size(spec.range.start, ["source", "range", "start"], node, file)
        if spec.range.end is not None:
            end = _size(spec.range.end, ["source", "range", "end"], node, file)
            if end < start:
                raise ConfigError("range.end is before range.start", path="source.range",
                                  file=file, line=_line_of(node, ["source", "range"]))
    return FileSource(spec.file, start=start, end=end, **common)  # type: ignore[arg-type]


def _build_sink(spec: SinkSpec, node: Any, file: str) -> Any:
    from .sinks import FileSink, NullSink, StdoutSink

    kinds = [k for k, set_ in (("file", spec.file is not None), ("stdout", spec.stdout),
                               ("null", spec.null)) if set_]
    if len(kinds) > 1:
        raise ConfigError(f"the sink needs one of `file`, `stdout: true` or `null: true`, "
                          f"got {', '.join(kinds)}", path="sink", file=file,
                          line=_line_of(node, ["sink"]))
    if spec.file is not None:
        return FileSink(spec.file, sync=spec.sync)
    if spec.null:
        return NullSink()
    return StdoutSink()


def load_job(path: str, overrides: list[str] = (), text: str | None = None) -> Job:
    """Read, override, validate and build the job in `path`. Raises ConfigError."""
    if text is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_BYTES + 1)   # not all of a log file given by mistake
        except OSError as e:
            raise ConfigError(f"cannot read the job: {e.strerror}", file=path) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"the job is not UTF-8 text ({e.reason} at byte {e.start})",
                              file=path) from None
    data, node = _parse_yaml(text, path)
    for assignment in overrides:
        apply_override(data, assignment)
    token = _OVERRIDDEN.set(tuple(_split_path(a.partition("=")[0].strip()) for a in overrides))
    try:
        return _validate(data, node, path)
    finally:
        _OVERRIDDEN.reset(token)


def _validate(data: dict[str, Any], node: Any, path: str) -> Job:
    try:
        spec = msgspec.convert(data, JobSpec)
    except msgspec.ValidationError as e:
        raise _msgspec_error(e, [], node, path, data) from None
    for key in ("memory_limit", "chunk_size"):
        if _size(getattr(spec, key), [key], node, path) < 1:
            raise _error("must be at least 1 byte", [key], node, path)
    if isinstance(spec.workers, int) and spec.workers < 1:
        raise _error("must be at least 1 (or 'auto')", ["workers"], node, path)
    if spec.max_attempts < 1:
        raise _error("must be at least 1", ["max_attempts"], node, path)
    if spec.chunk_timeout is not None:
        try:
            spec.chunk_timeout = parse_duration(data["chunk_timeout"])  # as written: 0, not 0.0
        except ValueError as e:
            raise _error(str(e), ["chunk_timeout"], node, path) from None
    if "checkpoint_interval" in data:
        try:
            spec.checkpoint_interval = parse_duration(data["checkpoint_interval"])
        except ValueError as e:
            raise _error(str(e), ["checkpoint_interval"], node, path) from None
    if spec.worker_max_chunks is not None and spec.worker_max_chunks < 1:
        raise _error("must be at least 1 (or left out: workers are kept for the whole job)",
                     ["worker_max_chunks"], node, path)
    source = _build_source(spec.source, node, path)
    stages = [_build_stage(i, entry, node, path) for i, entry in enumerate(spec.stages)]
    for i, stage in enumerate(stages):
        if i > 0 and stage.reads_source:
            raise _error(f"{stage.name} decodes the source's bytes, so it must be the first "
                         f"stage", ["stages", i], node, path)
        problem = placement(stages, i)
        if problem:
            raise _error(f"{stage.name} {problem}", ["stages", i], node, path)
    try:
        bind_chain(stages, source.record_format())
    except ValueError as e:
        i = getattr(e, "stage_index", 0)
        field = [e.field] if getattr(e, "field", None) else []  # type: ignore[attr-defined]
        if field and isinstance(getattr(e, "path", None), list):
            field = e.path
        message = getattr(e, "reason", None) if field else None
        raise _error(message or str(e), ["stages", i, stages[i].name, *field], node,
                     path) from None
    sink = _build_sink(spec.sink, node, path)
    return Job(spec, source, stages, sink, path)


__all__ = ["load_job", "apply_override", "Job", "JobSpec", "DataflowError"]
