"""Job files: YAML -> strict msgspec Structs -> runtime objects. Nothing starts on a bad config.

Rules:
- Unknown keys, wrong types and bad values are errors, reported as
  `job.yaml:7: stages[0].grep.pattern: <what is wrong>` (the line comes from the YAML node).
- YAML is loaded safely and checked before anything is built (yamldoc.py): only plain tags
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

from .errors import ConfigError, DataflowError, ResourceError, SinkError
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
    url: str | list[str] | None = None      # http(s): HttpSource; any other scheme: fsspec
    tcp: str | None = None                  # host:port to connect to (or listen on)
    command: list[str] | str | None = None  # a command whose stdout is the input
    # url (http)
    connections: int = 4
    part_size: Size = "8MiB"
    ranges: bool | Literal["auto"] = "auto"
    headers: dict[str, str] | None = None
    retries: int = 3
    # url (fsspec)
    storage_options: dict[str, Any] | None = None
    block_size: Size | None = None
    # url (http), tcp
    timeout: float | str | None = None
    listen: bool = False                    # tcp: accept one connection instead
    # command
    shell: bool = False
    env: dict[str, str] | None = None
    cwd: str | None = None
    ok_exit_codes: list[int] = msgspec.field(default_factory=lambda: [0])
    stderr: Literal["capture", "inherit"] = "capture"
    split: Literal["lines", "bytes", "jsonl", "csv", "tsv", "fixed"] = "lines"
    delimiter: str = "\n"
    record_start: str | None = None     # lines: a regex that starts a (multi-line) record
    record_size: Size = 0               # fixed: bytes per record
    header: bool | None = None          # csv/tsv: the first row names the columns (default)
    max_record_size: Size = 0
    # bytes that are not UTF-8, where a stage reads text (csv, jsonl, python record mode)
    errors: Literal["strict", "surrogateescape", "replace"] = "strict"
    range: RangeSpec | None = None


class SinkSpec(msgspec.Struct, forbid_unknown_fields=True):
    file: str | None = None
    stdout: bool = False
    null: bool = False
    directory: str | None = None   # one output per input file, names mirrored
    tee: list["SinkSpec"] | None = None   # the same output to each of these sinks
    url: str | None = None         # an fsspec URL (s3://, memory://...)
    tcp: str | None = None         # host:port to send to (or, with listen, to accept on)
    command: list[str] | str | None = None   # a command whose stdin takes the output
    storage_options: dict[str, Any] | None = None   # url
    part_size: Size | None = None  # url: S3 multipart part size
    listen: bool = False           # tcp
    timeout: float | str | None = None   # tcp
    close_timeout: float | str = 30.0    # tcp: wait this long for the peer to close
    shell: bool = False            # command
    env: dict[str, str] | None = None
    cwd: str | None = None
    ok_exit_codes: list[int] = msgspec.field(default_factory=lambda: [0])
    stderr: Literal["capture", "inherit"] = "inherit"   # command: its stdout is ours
    sync: bool = True  # file, directory: fsync before the rename (durable), not only atomic
    keep_cache: bool = False  # file, directory: keep the output in the page cache (sinks.py)
    suffix: str = ""          # directory: added to each output name
    strip_suffix: str = ""    # directory: removed from each input name first (".gz")
    root: str | None = None   # directory: input paths are mirrored relative to this
    # a tee branch with stages of its own (a Branch: a job of its own, fed by the tee)
    stages: list[Any] | None = None
    workers: int | Literal["auto"] = "auto"
    memory_limit: Size = "128MiB"
    chunk_size: Size = "4MiB"
    split: Literal["lines", "bytes", "jsonl", "csv", "tsv"] | None = None
    max_record_size: Size | None = None      # default: chunk_size
    errors: Literal["strict", "surrogateescape", "replace"] = "strict"


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
    timeout: float | str | None = None        # the whole job may take this long (JobTimeout)


class Job(msgspec.Struct):
    """A validated job with its runtime objects built."""

    spec: JobSpec
    source: Any
    stages: list[Any]
    sink: Any
    file: str = ""


# ----------------------------------------------------------------------------- YAML
# Loading and checking the document is yamldoc.py (PyYAML is imported only for a job file);
# here: finding a node's line for messages.
_KIND = {"null": "null", "bool": "a boolean", "int": "a number", "float": "a number",
         "date": "a date", "datetime": "a date", "timestamp": "a date", "str": "text",
         "array": "a list", "object": "a mapping"}      # YAML tags and msgspec's type names


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
        if node.id == "mapping" and isinstance(part, str):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    nxt = v
                    line = k.start_mark.line + 1
                    break
        elif node.id == "sequence" and isinstance(part, int):
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
             "timeout": "a duration such as 30, 30s, 5m or 1h",
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
    text = found.value if getattr(found, "id", None) == "scalar" else None  # as written
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
    from .yamldoc import YAMLError, load_yaml
    try:
        value = load_yaml(raw, "")[0] if raw.strip() else ""
    except YAMLError:
        value = raw
    except ConfigError as e:
        raise ConfigError(f"--set {path}: {e.message}") from None
    kinds = {"sink": (_SINK_KINDS, _SINK_OPTIONS), "source": (_SOURCE_KINDS, _SOURCE_OPTIONS)}
    if len(parts) >= 2 and parts[0] in kinds and parts[1] in kinds[parts[0]][0]:
        section = data.get(parts[0])
        names, options = kinds[parts[0]]
        if isinstance(section, dict):  # --set sink.file=x switches the kind: drop the other
            for other in names:        # kinds, and the options that belong to them only
                if other != parts[1]:
                    section.pop(other, None)
            for key, goes in options.items():
                if parts[1] not in goes:
                    section.pop(key, None)
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


def _build_stage(i: int, entry: Any, node: Any, file: str,
                 prefix: tuple[str | int, ...] = ()) -> Any:
    here: list[str | int] = [*prefix, "stages", i]
    if isinstance(entry, str):
        entry = {entry: None}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError("a stage is a mapping with exactly one key, the stage name "
                          "(e.g. `- grep: {pattern: ERROR}`)", path=_format_path(here),
                          file=file, line=_line_of(node, here))
    (name, options), = entry.items()
    if name == "compose":
        return _composed(options, here + ["compose"], node, file)
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


def _composed(ref: Any, parts: list[str | int], node: Any, file: str) -> list[Any]:
    """`- compose: "pkg.module:name"`: the transforms of the Chain (or list) found there."""
    from .chain import Chain, compose
    from .registry import resolve

    if not isinstance(ref, str):
        raise _error("expected 'module:name' of a dataflow.compose() chain", parts, node, file)
    try:
        found = resolve(ref)
    except (ValueError, ImportError, AttributeError) as e:
        raise _error(f"cannot load {ref}: {type(e).__name__}: {e}", parts, node, file) from None
    try:
        chain = found if isinstance(found, Chain) else compose(*found) \
            if isinstance(found, (list, tuple)) else None
    except TypeError as e:
        raise _error(f"{ref}: {e}", parts, node, file) from None
    if chain is None:
        raise _error(f"{ref} is of type {type(found).__name__}, not a chain made by "
                     f"dataflow.compose() or a list of transforms", parts, node, file)
    return list(chain.stages)


_SOURCE_KINDS = ("file", "stdin", "generate", "url", "tcp", "command")
# keys that belong to some kinds of source (or sink) only: key -> those kinds
_SOURCE_OPTIONS = {"range": ("file",), "connections": ("url",), "part_size": ("url",),
                   "ranges": ("url",), "headers": ("url",), "retries": ("url",),
                   "storage_options": ("url",), "block_size": ("url",),
                   "timeout": ("url", "tcp"), "listen": ("tcp",), "shell": ("command",),
                   "env": ("command",), "cwd": ("command",), "ok_exit_codes": ("command",),
                   "stderr": ("command",)}
_HTTP_ONLY = ("connections", "part_size", "ranges", "headers", "retries")


def _kind_options(spec: Any, kind: str, table: dict[str, tuple[str, ...]], section: str,
                  node: Any, file: str, parts: list[str | int]) -> None:
    """Refuse a key set for a kind of source/sink it does not belong to."""
    defaults = type(spec)()
    for key, goes in table.items():
        if getattr(spec, key) != getattr(defaults, key) and kind not in goes:
            raise _error(f"{key} goes with a {' or '.join(goes)} {section}, not {kind}",
                         parts + [key], node, file)


def _is_http(url: Any) -> bool:
    return isinstance(url, str) and re.match(r"(?i)https?://", url) is not None


def _duration_of(value: Any, parts: list[str | int], node: Any, file: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _error(str(e), parts, node, file) from None


def _built(make: Any, parts: list[str | int], node: Any, file: str) -> Any:
    """Build a source/sink; its ValueError (with `.field`) becomes a ConfigError there."""
    try:
        return make()
    except (ValueError, SinkError) as e:
        field = getattr(e, "field", None)
        field = {"argv": "command"}.get(field, field)   # a command's words are `command:`
        message = str(e).replace("argv", "command") if field == "command" else str(e)
        raise _error(message, parts + ([field] if field else []), node, file) from None


def _build_source(spec: SourceSpec, node: Any, file: str) -> Any:
    from .sources import FileSource, GenerateSource, StdinSource

    given = {"file": spec.file is not None, "stdin": spec.stdin,
             "generate": spec.generate is not None, "url": spec.url is not None,
             "tcp": spec.tcp is not None, "command": spec.command is not None}
    kinds = [k for k in _SOURCE_KINDS if given[k]]
    if len(kinds) != 1:
        raise ConfigError("the source needs exactly one of `file`, `stdin: true`, `generate`, "
                          f"`url`, `tcp` or `command`{', got ' + ', '.join(kinds) if kinds else ''}",
                          path="source", file=file, line=_line_of(node, ["source"]))
    kind = kinds[0]
    _kind_options(spec, kind, _SOURCE_OPTIONS, "source", node, file, ["source"])
    if kind == "url" and not _is_http(spec.url):
        for key in _HTTP_ONLY:
            if getattr(spec, key) != getattr(SourceSpec(), key):
                raise _error(f"{key} goes with an http(s) URL, not {spec.url}",
                             ["source", key], node, file)
        if spec.timeout is not None:
            raise _error("timeout goes with an http(s) URL or tcp; for other URLs set it in "
                         "storage_options", ["source", "timeout"], node, file)
    elif kind == "url" and (spec.storage_options is not None or spec.block_size is not None):
        key = "storage_options" if spec.storage_options is not None else "block_size"
        raise _error(f"{key} goes with an fsspec URL (s3://, memory://...), not http(s)",
                     ["source", key], node, file)
    if not spec.delimiter:
        raise ConfigError("the delimiter cannot be empty", path="source.delimiter", file=file,
                          line=_line_of(node, ["source", "delimiter"]))
    record = _size(spec.max_record_size, ["source", "max_record_size"], node, file)
    delim = spec.delimiter.encode("utf-8", "surrogateescape")
    fixed = _size(spec.record_size, ["source", "record_size"], node, file)
    for key, wrong in (("record_start", spec.record_start is not None and spec.split != "lines"),
                       ("record_size", bool(fixed) and spec.split != "fixed"),
                       ("header", spec.header is not None and spec.split not in ("csv", "tsv")),
                       ("delimiter", spec.delimiter != "\n" and spec.split != "lines"),
                       ("errors", spec.errors == "surrogateescape" and spec.split == "jsonl")):
        if wrong:
            if key == "errors":
                raise ConfigError("surrogateescape cannot go with split: jsonl: JSON text is "
                                  "UTF-8, with no way to carry other bytes; use replace",
                                  path="source.errors", file=file,
                                  line=_line_of(node, ["source", "errors"]))
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
                  record_start=spec.record_start, record_size=fixed, header=spec.header,
                  errors=spec.errors)
    here: list[str | int] = ["source"]
    if kind == "generate":
        assert spec.generate is not None
        size = _size(spec.generate.size, ["source", "generate", "size"], node, file)
        return GenerateSource(size, spec.generate.seed, **common)
    if kind == "stdin":
        return StdinSource(**common)
    if kind == "url" and _is_http(spec.url):
        from .http import HttpSource

        timeout = _duration_of(spec.timeout, here + ["timeout"], node, file)
        part = _size(spec.part_size, here + ["part_size"], node, file)
        return _built(lambda: HttpSource(
            spec.url, connections=spec.connections, part_size=part, ranges=spec.ranges,
            headers=spec.headers, timeout=30.0 if timeout is None else timeout,
            retries=spec.retries, **common), here, node, file)
    if kind == "url":
        from .remote import FsspecSource

        block = None if spec.block_size is None else \
            _size(spec.block_size, here + ["block_size"], node, file)
        return _built(lambda: FsspecSource(spec.url, storage_options=spec.storage_options,
                                           block_size=block, **common), here, node, file)
    if kind == "tcp":
        from .tcp import TcpSource

        timeout = _duration_of(spec.timeout, here + ["timeout"], node, file)
        return _built(lambda: TcpSource(spec.tcp, listen=spec.listen, timeout=timeout,
                                        **common), here + ["tcp"], node, file)
    if kind == "command":
        from .procio import CommandSource

        def make() -> Any:
            src = CommandSource(spec.command, shell=spec.shell, env=spec.env, cwd=spec.cwd,
                                ok_exit_codes=spec.ok_exit_codes, stderr=spec.stderr, **common)
            src.check()
            return src
        return _built(make, here, node, file)
    start, end = 0, None
    if spec.range is not None:
        start = _size(spec.range.start, ["source", "range", "start"], node, file)
        if spec.range.end is not None:
            end = _size(spec.range.end, ["source", "range", "end"], node, file)
            if end < start:
                raise ConfigError("range.end is before range.start", path="source.range",
                                  file=file, line=_line_of(node, ["source", "range"]))
    return FileSource(spec.file, start=start, end=end, **common)  # type: ignore[arg-type]


_SINK_KINDS = ("file", "stdout", "null", "directory", "tee", "url", "tcp", "command")
_SINK_OPTIONS = {"sync": ("file", "directory"), "keep_cache": ("file", "directory"),
                 "suffix": ("directory",),
                 "strip_suffix": ("directory",), "root": ("directory",),
                 "storage_options": ("url",), "part_size": ("url",), "listen": ("tcp",),
                 "timeout": ("tcp",), "close_timeout": ("tcp",), "shell": ("command",), "env": ("command",),
                 "cwd": ("command",), "ok_exit_codes": ("command",), "stderr": ("command",)}


_BRANCH_OPTIONS = ("stages", "workers", "memory_limit", "chunk_size", "split", "max_record_size",
                   "errors")
_BRANCH_DEFAULTS = {k: getattr(SinkSpec(), k) for k in _BRANCH_OPTIONS}


def _given(spec: SinkSpec, key: str) -> bool:
    return getattr(spec, key) != _BRANCH_DEFAULTS[key]


def _branch(spec: SinkSpec, sink: Any, node: Any, file: str, parts: list[str | int],
            index: int) -> Any:
    """A tee branch with stages of its own: a Branch running them into `sink`."""
    from .branch import Branch
    from .iterables import IterableSource

    here = tuple(parts)
    for key in ("memory_limit", "chunk_size", "max_record_size"):
        if getattr(spec, key) is not None and \
                _size(getattr(spec, key), parts + [key], node, file) < 1:
            raise _error("must be at least 1 byte", parts + [key], node, file)
    if isinstance(spec.workers, int) and spec.workers < 1:
        raise _error("must be at least 1 (or 'auto')", parts + ["workers"], node, file)
    assert spec.stages is not None
    if not spec.stages:
        raise _error("a tee branch's stages cannot be empty (leave them out)",
                     parts + ["stages"], node, file)
    stages, origin = _build_chain(spec.stages, here, node, file)
    try:
        branch = Branch(*stages, sink, workers=spec.workers, memory_limit=spec.memory_limit,
                        chunk_size=spec.chunk_size, split=spec.split, errors=spec.errors,
                        max_record_size=spec.max_record_size, name=f"branch {index}")
    except ResourceError as e:
        raise _error(str(e), parts + ["memory_limit"], node, file) from None
    try:   # the branch's records: as its split says (Branch chose it when not given)
        fmt = IterableSource([], split=branch.split, errors=spec.errors).record_format()
    except ValueError as e:
        raise _error(str(e), parts + ["errors"], node, file) from None
    _bind_chain(stages, origin, spec.stages, here, fmt, node, file)
    return branch


def _build_sink(spec: SinkSpec, node: Any, file: str,
                parts: list[str | int] | None = None) -> Any:
    from .directory import DirectorySink
    from .sinks import FileSink, NullSink, StdoutSink
    from .tee import Tee

    parts = parts or ["sink"]
    where = _format_path(parts)
    given = {"file": spec.file is not None, "stdout": spec.stdout, "null": spec.null,
             "directory": spec.directory is not None, "tee": spec.tee is not None,
             "url": spec.url is not None, "tcp": spec.tcp is not None,
             "command": spec.command is not None}
    kinds = [k for k in _SINK_KINDS if given[k]]
    if len(kinds) > 1:
        raise ConfigError(f"the sink needs one of `file`, `stdout: true`, `null: true`, "
                          f"`directory`, `tee`, `url`, `tcp` or `command`, got "
                          f"{', '.join(kinds)}", path=where, file=file,
                          line=_line_of(node, parts))
    kind = kinds[0] if kinds else "stdout"
    _kind_options(spec, kind, _SINK_OPTIONS, "sink", node, file, parts)
    in_tee = len(parts) >= 2 and parts[-2] == "tee"
    for key in _BRANCH_OPTIONS:
        if (not in_tee or spec.stages is None) and _given(spec, key):
            raise _error(f"{key} goes with a tee branch that has stages of its own" if in_tee
                         else f"{key} goes with a tee branch (sink: {{tee: [...]}}); the job's "
                         f"own stages are the top-level `stages`", parts + [key], node, file)
    if kind == "url":
        if _is_http(spec.url):
            raise _error("there is no HTTP sink: write to a file, an fsspec URL (s3://...), "
                         "tcp or a command (curl -T -)", parts + ["url"], node, file)
        from .remote import DEFAULT_PART_SIZE, FsspecSink

        part = DEFAULT_PART_SIZE if spec.part_size is None else \
            _size(spec.part_size, parts + ["part_size"], node, file)
        return _built(lambda: FsspecSink(spec.url, storage_options=spec.storage_options,
                                         part_size=part), parts, node, file)
    if kind == "tcp":
        from .tcp import TcpSink

        timeout = _duration_of(spec.timeout, parts + ["timeout"], node, file)
        linger = _duration_of(spec.close_timeout, parts + ["close_timeout"], node, file)
        return _built(lambda: TcpSink(spec.tcp, listen=spec.listen, timeout=timeout,
                                      close_timeout=linger), parts + ["tcp"], node, file)
    if kind == "command":
        from .procio import CommandSink

        def make() -> Any:
            out = CommandSink(spec.command, shell=spec.shell, env=spec.env, cwd=spec.cwd,
                              ok_exit_codes=spec.ok_exit_codes, stderr=spec.stderr)
            out.command.check()
            return out
        return _built(make, parts, node, file)
    if kind == "file":
        return FileSink(spec.file, sync=spec.sync, keep_cache=spec.keep_cache)
    if kind == "directory":
        return DirectorySink(spec.directory, suffix=spec.suffix, strip_suffix=spec.strip_suffix,
                             root=spec.root, sync=spec.sync, keep_cache=spec.keep_cache)
    if kind == "tee":
        assert spec.tee is not None
        if len(spec.tee) < 2:
            raise _error("a tee needs at least two sinks", parts + ["tee"], node, file)
        branches = [_build_sink(b, node, file, parts + ["tee", i]) for i, b in enumerate(spec.tee)]
        for i, b in enumerate(branches):
            if isinstance(b, (DirectorySink, Tee)):
                raise _error(f"a tee branch cannot be a {type(b).__name__}",
                             parts + ["tee", i], node, file)
            if spec.tee[i].stages is not None:
                branches[i] = _branch(spec.tee[i], b, node, file, parts + ["tee", i], i)
        return Tee(*branches)
    if kind == "null":
        return NullSink()
    return StdoutSink()


def load_job(path: str, overrides: list[str] = (), text: str | None = None) -> Job:
    """Read, override, validate and build the job in `path`. Raises ConfigError."""
    from .yamldoc import MAX_BYTES, parse_yaml
    if text is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_BYTES + 1)   # not all of a log file given by mistake
        except OSError as e:
            raise ConfigError(f"cannot read the job: {e.strerror}", file=path) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"the job is not UTF-8 text ({e.reason} at byte {e.start})",
                              file=path) from None
    data, node = parse_yaml(text, path)
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
    if spec.timeout is not None:
        try:
            spec.timeout = parse_duration(data["timeout"])
        except ValueError as e:
            raise _error(str(e), ["timeout"], node, path) from None
    if "checkpoint_interval" in data:
        try:
            spec.checkpoint_interval = parse_duration(data["checkpoint_interval"])
        except ValueError as e:
            raise _error(str(e), ["checkpoint_interval"], node, path) from None
    if spec.worker_max_chunks is not None and spec.worker_max_chunks < 1:
        raise _error("must be at least 1 (or left out: workers are kept for the whole job)",
                     ["worker_max_chunks"], node, path)
    source = _build_source(spec.source, node, path)
    stages, origin = _build_chain(spec.stages, (), node, path)
    _bind_chain(stages, origin, spec.stages, (), source.record_format(), node, path)
    sink = _build_sink(spec.sink, node, path)
    return Job(spec, source, stages, sink, path)


def _build_chain(entries: list[Any], prefix: tuple[str | int, ...], node: Any,
                 path: str) -> tuple[list[Any], list[int]]:
    """The stages at `prefix`.stages (the job's, or a tee branch's), checked for their place;
    with, for each, the YAML stage it comes from (a compose makes several)."""
    stages: list[Any] = []
    origin: list[int] = []
    for i, entry in enumerate(entries):
        built = _build_stage(i, entry, node, path, prefix)
        more = built if isinstance(built, list) else [built]
        stages.extend(more)
        origin.extend([i] * len(more))
    for i, stage in enumerate(stages):
        if (i > 0 or prefix) and stage.reads_source:
            raise _error(f"{stage.name} decodes the source's bytes, so it must be the first "
                         f"stage of the job", [*prefix, "stages", origin[i]], node, path)
        problem = placement(stages, i)
        if problem:
            raise _error(f"{stage.name} {problem}", [*prefix, "stages", origin[i]], node, path)
    return stages, origin


def _bind_chain(stages: list[Any], origin: list[int], entries: list[Any],
                prefix: tuple[str | int, ...], fmt: Any, node: Any, path: str) -> None:
    """Bind the chain to the records `fmt` that come in; a mismatch names the stage's key."""
    try:
        bind_chain(stages, fmt)
    except ValueError as e:
        i = getattr(e, "stage_index", 0)
        field = [e.field] if getattr(e, "field", None) else []  # type: ignore[attr-defined]
        if field and isinstance(getattr(e, "path", None), list):
            field = e.path
        message = getattr(e, "reason", None) if field else None
        key = "compose" if entries and isinstance(entries[origin[i]], dict) and \
            "compose" in entries[origin[i]] else stages[i].name
        raise _error(message or str(e), [*prefix, "stages", origin[i], key, *field], node,
                     path) from None


__all__ = ["load_job", "apply_override", "Job", "JobSpec", "DataflowError"]
