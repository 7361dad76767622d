"""A job document: YAML loaded safely and checked before anything reads it. Imported only
when a job file (or a YAML value on the command line) is read: the one-line commands do
without PyYAML's import.

Rules (config.py's, for the document):
- Only plain tags (never `!!python/...`), text keys, no duplicate key (PyYAML would keep the
  last silently), integers in decimal (YAML 1.1 reads `0755` as 493, `0x10` as 16, `1:30` as
  90).
- At most MAX_BYTES of text, MAX_VALUES values once aliases are expanded ("billion laughs")
  and MAX_DEPTH levels.
- Errors are ConfigErrors naming the file, the line and the path of the value.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from .config import _KIND, _format_path
from .errors import ConfigError

YAMLError = yaml.YAMLError     # what config.apply_override catches

# Limits of a job document: a log file given by mistake, or a "billion laughs" document (nested
# anchors and aliases: a few hundred bytes that expand to 9^9 values), is refused up front.
MAX_BYTES = 1 << 20
MAX_VALUES = 100_000            # values once aliases are expanded (each use counts)
MAX_DEPTH = 50
_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("null", "bool", "int", "float", "str", "timestamp", "seq",
                                  "map", "merge")}
_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9_]*)")


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


def load_yaml(text: str, file: str) -> tuple[Any, Any]:
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


def parse_yaml(text: str, file: str) -> tuple[Any, Any]:
    try:
        data, node = load_yaml(text, file)
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
