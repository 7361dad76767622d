"""Job files, `--set` overrides, sizes and the slot plan. Pure: no processes are started.

Config errors are pinned to their exact text: `file:line: config.path: message` is the
interface users read, so a change to it should be a deliberate one.
"""
from __future__ import annotations

import itertools
import re
import textwrap
import time
import tracemalloc
import uuid

import pytest

from dataflow.registry import STAGES

from dataflow.config import load_job
from dataflow.errors import ConfigError, ResourceError
from dataflow.plan import COORDINATOR, MIN_SLOT, SCRATCH, WORKER, make_plan
from dataflow.sinks import FileSink, NullSink, StdoutSink
from dataflow.sizes import parse_size
from dataflow.sources import FileSource, GenerateSource, StdinSource

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.fixture
def job_file(tmp_path, monkeypatch):
    """Write a job to tmp_path/job.yaml; return the relative name (messages name it as given)."""
    monkeypatch.chdir(tmp_path)

    def write(text: str, name: str = "job.yaml") -> str:
        (tmp_path / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return name

    return write


@pytest.fixture
def config_error(job_file):
    """Load a job that must fail; return the ConfigError."""

    def load(text: str, overrides: list[str] = ()) -> ConfigError:
        name = job_file(text)
        with pytest.raises(ConfigError) as info:
            load_job(name, list(overrides))
        return info.value

    return load


@pytest.fixture
def udf(tmp_path, monkeypatch):
    """A user module on sys.path with a unique name (no stale sys.modules entry)."""
    name = f"udf_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        def good(data):
            return data

        def two(data, other):
            return data

        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# ============================================================================ valid jobs
def test_full_job_builds_the_runtime_objects(job_file):
    name = job_file("""
        source:
          file: [a.log, "logs/*.log"]
          split: lines
          delimiter: "\\0"
          max_record_size: 1MiB
        stages:
          - grep: {pattern: 'ERROR [0-9]+', invert: true, ignore_case: true}
          - passthrough
          - grep:
              pattern: "a.b"
              fixed: true
        sink: {file: out/result.log}
        workers: 3
        memory_limit: 64MiB
        chunk_size: 256KiB
        ordered: false
        max_attempts: 2
    """)
    job = load_job(name)

    src = job.source
    assert isinstance(src, FileSource)
    assert src.patterns == ["a.log", "logs/*.log"]
    assert src.split == "lines"
    assert src.delimiter == b"\0"
    assert src.max_record_size == MiB
    assert (src.start, src.end) == (0, None)
    assert src.paths == []                    # nothing is touched before the job runs

    g1, p, g2 = job.stages
    assert type(g1).__name__ == "Grep" and g1.name == "grep"
    assert (g1.pattern, g1.invert, g1.ignore_case, g1.fixed, g1.delimiter) == \
        ("ERROR [0-9]+", True, True, False, b"\n")
    assert g1.compile().search(b"error 42") is not None          # ignore_case reached re
    assert type(p).__name__ == "Passthrough"
    assert (g2.pattern, g2.fixed, g2.invert) == ("a.b", True, False)
    assert g2.compile().search(b"axb") is None                   # fixed: the dot is literal
    assert g2.compile().search(b"a.b") is not None

    assert isinstance(job.sink, FileSink) and job.sink.path == "out/result.log"

    spec = job.spec
    assert spec.workers == 3
    assert parse_size(spec.memory_limit) == 64 * MiB
    assert parse_size(spec.chunk_size) == 256 * KiB
    assert spec.ordered is False
    assert spec.max_attempts == 2
    assert job.file == name


def test_minimal_job_gets_the_defaults(job_file):
    job = load_job(job_file("source: {file: access.log}\n"))
    assert isinstance(job.source, FileSource)
    assert job.source.patterns == ["access.log"]
    assert (job.source.split, job.source.delimiter, job.source.max_record_size) == \
        ("lines", b"\n", 0)
    assert job.stages == []
    assert isinstance(job.sink, StdoutSink)
    assert job.spec.workers == "auto"
    assert parse_size(job.spec.memory_limit) == 512 * MiB
    assert parse_size(job.spec.chunk_size) == 4 * MiB
    assert job.spec.ordered is True


def test_generate_stdin_range_and_null_sink(job_file):
    gen = load_job(job_file("source: {generate: {size: 3MiB, seed: 9}}\n"))
    assert isinstance(gen.source, GenerateSource)
    assert (gen.source.total, gen.source.seed) == (3 * MiB, 9)

    stdin = load_job(job_file("source: {stdin: true, delimiter: ';'}\n"))
    assert isinstance(stdin.source, StdinSource) and stdin.source.delimiter == b";"

    ranged = load_job(job_file("source: {file: a.log, range: {start: 1KiB, end: 2KiB}}\n"))
    assert (ranged.source.start, ranged.source.end) == (KiB, 2 * KiB)

    null = load_job(job_file("source: {file: a.log}\nsink: {'null': true}\n"))
    assert isinstance(null.sink, NullSink)


def test_python_stage_with_a_good_function(job_file, udf):
    job = load_job(job_file(f"""
        source: {{file: a.log}}
        stages:
          - python: {{callable: "{udf}:good", mode: line}}
    """))
    (stage,) = job.stages
    assert (stage.ref, stage.mode, stage.args) == (f"{udf}:good", "line", {})


# ============================================================================ errors
ERRORS = [
    ("unknown top-level key",
     """
     source: {file: a.log}
     worker: 2
     """,
     "job.yaml:2: worker: unknown key 'worker'; did you mean 'workers'?", "worker", 2),
    ("unknown key without a close match lists the keys",
     """
     source: {file: a.log}
     sink: {zzz: 1}
     """,
     "job.yaml:2: sink.zzz: unknown key 'zzz'; expected one of: file, stdout, null, directory, "
     "tee, url, tcp, command, storage_options, part_size, listen, timeout, close_timeout, "
     "shell, env, cwd, "
     "ok_exit_codes, stderr, sync, keep_cache, suffix, strip_suffix, root, stages, workers, "
     "memory_limit, "
     "chunk_size, split, max_record_size, errors",
     "sink.zzz", 2),
    ("unknown source key",
     """
     source: {file: a.log, spilt: bytes}
     """,
     "job.yaml:1: source.spilt: unknown key 'spilt'; did you mean 'split'?", "source.spilt", 1),
    ("unknown stage",
     """
     source: {file: a.log}
     stages:
       - grpe: {pattern: x}
     """,
     "job.yaml:3: stages[0]: unknown stage 'grpe'; did you mean 'grep'?", "stages[0]", 3),
    ("unknown stage, nothing close",
     """
     source: {file: a.log}
     stages:
       - passthrough
       - xyzzy
     """,
     "job.yaml:4: stages[1]: unknown stage 'xyzzy'; known stages: " + ", ".join(sorted(STAGES)),
     "stages[1]", 4),
    ("unknown stage option",
     """
     source: {file: a.log}
     stages:
       - grep:
           pattern: x
           inverted: true
     """,
     "job.yaml:5: stages[0].grep.inverted: unknown key 'inverted'; did you mean 'invert'?",
     "stages[0].grep.inverted", 5),
    ("stage with two keys",
     """
     source: {file: a.log}
     stages:
       - grep: {pattern: x}
         passthrough: {}
     """,
     "job.yaml:3: stages[0]: a stage is a mapping with exactly one key, the stage name "
     "(e.g. `- grep: {pattern: ERROR}`)", "stages[0]", 3),
    ("missing stage option",
     """
     source: {file: a.log}
     stages:
       - grep: {invert: true}
     """,
     "job.yaml:3: stages[0].grep: missing required key `pattern`", "stages[0].grep", 3),
    ("wrong type: workers",
     """
     source: {file: a.log}
     workers: many
     """,
     "job.yaml:2: workers: expected a positive integer or 'auto', got 'many'", "workers", 2),
    ("wrong type: a quoted boolean",
     """
     source: {file: a.log}
     stages:
       - grep:
           pattern: x
           invert: "yes"
     """,
     "job.yaml:5: stages[0].grep.invert: expected `bool`, got `str`: write true or false, "
     "without quotes", "stages[0].grep.invert", 5),
    ("wrong type: stages is not a list",
     """
     source: {file: a.log}
     stages: {grep: x}
     """,
     "job.yaml:2: stages: expected `array`, got `object`", "stages", 2),
    ("YAML 1.1 boolean where text was expected",
     """
     source: {file: a.log}
     stages:
       - grep:
           pattern: no
     """,
     "job.yaml:4: stages[0].grep.pattern: expected `str`, got `bool`: YAML reads no as a "
     "boolean; quote it ('no') to keep the text", "stages[0].grep.pattern", 4),
    ("bad size",
     """
     source: {file: a.log}
     memory_limit: 12 bananas
     """,
     "job.yaml:2: memory_limit: expected a size such as 4096, 4MiB or 1.5GB, got '12 bananas'",
     "memory_limit", 2),
    ("bad nested size",
     """
     source:
       generate: {size: lots}
     """,
     "job.yaml:2: source.generate.size: expected a size such as 4096, 4MiB or 1.5GB, "
     "got 'lots'", "source.generate.size", 2),
    ("zero chunk size",
     """
     source: {file: a.log}
     chunk_size: 0
     """,
     "job.yaml:2: chunk_size: must be at least 1 byte", "chunk_size", 2),
    ("workers: 0",
     """
     source: {file: a.log}
     workers: 0
     """,
     "job.yaml:2: workers: must be at least 1 (or 'auto')", "workers", 2),
    ("source with two kinds",
     """
     source: {file: a.log, stdin: true}
     """,
     "job.yaml:1: source: the source needs exactly one of `file`, `stdin: true`, `generate`, "
     "`url`, `tcp` or `command`, got file, stdin", "source", 1),
    ("source with no kind",
     """
     source: {split: lines}
     """,
     "job.yaml:1: source: the source needs exactly one of `file`, `stdin: true`, `generate`, "
     "`url`, `tcp` or `command`", "source", 1),
    ("no source at all",
     """
     workers: 2
     """,
     "job.yaml:1: missing required key `source`", "", 1),
    ("sink with two kinds",
     """
     source: {file: a.log}
     sink: {file: out.log, stdout: true}
     """,
     "job.yaml:2: sink: the sink needs one of `file`, `stdout: true`, `null: true`, "
     "`directory`, `tee`, `url`, `tcp` or `command`, got file, stdout", "sink", 2),
    ("empty delimiter",
     """
     source: {file: a.log, delimiter: ''}
     """,
     "job.yaml:1: source.delimiter: the delimiter cannot be empty", "source.delimiter", 1),
    ("range backwards",
     """
     source: {file: a.log, range: {start: 2KiB, end: 1KiB}}
     """,
     "job.yaml:1: source.range: range.end is before range.start", "source.range", 1),
    ("invalid regex",
     """
     source: {file: a.log}
     stages:
       - grep:
           pattern: "("
     """,
     "job.yaml:4: stages[0].grep.pattern: invalid regular expression: missing ), unterminated subpattern at "
     "position 0", "stages[0].grep.pattern", 4),
    ("python: module that does not exist",
     """
     source: {file: a.log}
     stages:
       - python:
           callable: "no_such_module_zq81:f"
     """,
     "job.yaml:4: stages[0].python.callable: ModuleNotFoundError: No module named "
     "'no_such_module_zq81'", "stages[0].python.callable", 4),
    ("python: not module:name",
     """
     source: {file: a.log}
     stages:
       - python: {callable: nocolon}
     """,
     "job.yaml:3: stages[0].python.callable: ValueError: expected 'module:name', got "
     "'nocolon'", "stages[0].python.callable", 3),
    # ------------------------------------------------ unknown keys: a did-you-mean everywhere
    ("unknown key: wokers",
     """
     source: {file: a.log}
     wokers: 2
     """,
     "job.yaml:2: wokers: unknown key 'wokers'; did you mean 'workers'?", "wokers", 2),
    ("unknown key: chunk_sise",
     """
     source: {file: a.log}
     chunk_sise: 1MiB
     """,
     "job.yaml:2: chunk_sise: unknown key 'chunk_sise'; did you mean 'chunk_size'?",
     "chunk_sise", 2),
    ("unknown sink key",
     """
     source: {file: a.log}
     sink:
       fiel: out.log
     """,
     "job.yaml:3: sink.fiel: unknown key 'fiel'; did you mean 'file'?", "sink.fiel", 3),
    ("unknown stage option: patern",
     """
     source: {file: a.log}
     stages:
       - grep: {patern: x}
     """,
     "job.yaml:3: stages[0].grep.patern: unknown key 'patern'; did you mean 'pattern'?",
     "stages[0].grep.patern", 3),
    # ------------------------------------------------ wrong types
    ("wrong type: workers 2.5",
     """
     source: {file: a.log}
     workers: 2.5
     """,
     "job.yaml:2: workers: expected a positive integer or 'auto', got 2.5", "workers", 2),
    ("wrong type: a size that is a list",
     """
     source: {file: a.log}
     memory_limit: [1]
     """,
     "job.yaml:2: memory_limit: expected a size such as 4096, 4MiB or 1.5GB, got a list",
     "memory_limit", 2),
    ("wrong type: a float size",
     """
     source: {file: a.log}
     chunk_size: 1.0e+6
     """,
     "job.yaml:2: chunk_size: expected a size such as 4096, 4MiB or 1.5GB, got 1.0e+6",
     "chunk_size", 2),
    ("wrong type: a quoted boolean at the top level",
     """
     source: {file: a.log}
     ordered: 'no'
     """,
     "job.yaml:2: ordered: expected `bool`, got `str`: write true or false, without quotes",
     "ordered", 2),
    ("wrong type: a number where text is expected",
     """
     source: {file: a.log}
     stages:
       - grep: {pattern: 123}
     """,
     "job.yaml:3: stages[0].grep.pattern: expected `str`, got `int`: YAML reads 123 as a "
     "number; quote it ('123') to keep the text", "stages[0].grep.pattern", 3),
    ("wrong type: worker_max_chunks",
     """
     source: {file: a.log}
     worker_max_chunks: lots
     """,
     "job.yaml:2: worker_max_chunks: expected an integer >= 1, got 'lots'",
     "worker_max_chunks", 2),
    # ------------------------------------------------ out of range
    ("max_attempts: 0",
     """
     source: {file: a.log}
     max_attempts: 0
     """,
     "job.yaml:2: max_attempts: must be at least 1", "max_attempts", 2),
    ("worker_max_chunks: 0",
     """
     source: {file: a.log}
     worker_max_chunks: 0
     """,
     "job.yaml:2: worker_max_chunks: must be at least 1 (or left out: workers are kept for "
     "the whole job)", "worker_max_chunks", 2),
    ("worker_max_chunks: -3",
     """
     source: {file: a.log}
     worker_max_chunks: -3
     """,
     "job.yaml:2: worker_max_chunks: must be at least 1 (or left out: workers are kept for "
     "the whole job)", "worker_max_chunks", 2),
    ("chunk_timeout: 0",
     """
     source: {file: a.log}
     chunk_timeout: 0
     """,
     "job.yaml:2: chunk_timeout: a duration must be more than 0, got 0", "chunk_timeout", 2),
    ("chunk_timeout: -5",
     """
     source: {file: a.log}
     chunk_timeout: -5
     """,
     "job.yaml:2: chunk_timeout: a duration must be more than 0, got -5", "chunk_timeout", 2),
    ("chunk_timeout: 0s",
     """
     source: {file: a.log}
     chunk_timeout: 0s
     """,
     "job.yaml:2: chunk_timeout: a duration must be more than 0, got '0s'", "chunk_timeout", 2),
    ("chunk_timeout: soon",
     """
     source: {file: a.log}
     chunk_timeout: soon
     """,
     "job.yaml:2: chunk_timeout: expected a duration such as 30, 30s, 500ms, 5m or 1h, "
     "got 'soon'", "chunk_timeout", 2),
    ("chunk_timeout: -5s",
     """
     source: {file: a.log}
     chunk_timeout: -5s
     """,
     "job.yaml:2: chunk_timeout: expected a duration such as 30, 30s, 500ms, 5m or 1h, "
     "got '-5s'", "chunk_timeout", 2),
    ("chunk_timeout: true",
     """
     source: {file: a.log}
     chunk_timeout: true
     """,
     "job.yaml:2: chunk_timeout: expected a duration such as 30, 30s, 500ms, 5m or 1h, "
     "got true", "chunk_timeout", 2),
    # ------------------------------------------------ YAML 1.1 surprises
    ("YAML 1.1: yes where text is expected",
     """
     source: {file: a.log}
     stages:
       - grep: {pattern: yes}
     """,
     "job.yaml:3: stages[0].grep.pattern: expected `str`, got `bool`: YAML reads yes as a "
     "boolean; quote it ('yes') to keep the text", "stages[0].grep.pattern", 3),
    ("YAML 1.1: an octal pattern",
     """
     source: {file: a.log}
     stages:
       - grep: {pattern: 0755}
     """,
     "job.yaml:3: stages[0].grep.pattern: YAML 1.1 reads 0755 as the octal number 493: write "
     "numbers in decimal, or quote it ('0755') to keep the text", "stages[0].grep.pattern", 3),
    ("YAML 1.1: an octal size",
     """
     source: {file: a.log}
     memory_limit: 0755
     """,
     "job.yaml:2: memory_limit: YAML 1.1 reads 0755 as the octal number 493: write numbers in "
     "decimal, or quote it ('0755') to keep the text", "memory_limit", 2),
    ("YAML 1.1: a hexadecimal count",
     """
     source: {file: a.log}
     workers: 0x10
     """,
     "job.yaml:2: workers: YAML 1.1 reads 0x10 as the hexadecimal number 16: write numbers in "
     "decimal, or quote it ('0x10') to keep the text", "workers", 2),
    ("YAML 1.1: a base 60 number",
     """
     source: {file: a.log}
     chunk_timeout: 1:30
     """,
     "job.yaml:2: chunk_timeout: YAML 1.1 reads 1:30 as the base 60 number 90: write numbers "
     "in decimal, or quote it ('1:30') to keep the text", "chunk_timeout", 2),
    ("YAML 1.1: 1e6 is text, not a number",
     """
     source: {file: a.log}
     chunk_size: 1e6
     """,
     "job.yaml:2: chunk_size: expected a size such as 4096, 4MiB or 1.5GB, got '1e6'",
     "chunk_size", 2),
    ("YAML 1.1: a date where a file name is expected",
     """
     source: {file: 2024-01-31}
     """,
     "job.yaml:1: source.file: expected `str | array | null`, got `date`: YAML reads "
     "2024-01-31 as a date; quote it ('2024-01-31') to keep the text", "source.file", 1),
    # ------------------------------------------------ keys
    ("duplicate key in a flow mapping",
     """
     source: {file: a.log, file: b.log}
     """,
     "job.yaml:1: source.file: duplicate key 'file' (first on line 1): remove one of them",
     "source.file", 1),
    ("a number as a key",
     """
     source: {file: a.log}
     3: workers
     """,
     "job.yaml:2: 3: a key must be text, and YAML reads 3 as a number: quote it ('3') or fix "
     "the name", "3", 2),
    ("a boolean as a key",
     """
     source: {file: a.log}
     sink:
       yes: true
     """,
     "job.yaml:3: sink.yes: a key must be text, and YAML reads yes as a boolean: quote it "
     "('yes') or fix the name", "sink.yes", 3),
    ("a list as a key",
     """
     source: {file: a.log}
     ? [a, b]
     : 1
     """,
     "job.yaml:2: a key must be text, not a list or mapping", "", 2),
    # ------------------------------------------------ tags (YAML is loaded safely)
    ("python tag: object/apply",
     """
     source: {file: a.log}
     workers: !!python/object/apply:os.system ["touch pwned"]
     """,
     "job.yaml:2: workers: the tag !!python/object/apply:os.system is not allowed: a job "
     "holds only plain values (text, numbers, booleans, lists, mappings)", "workers", 2),
    ("python tag: name",
     """
     source: {file: a.log}
     stages:
       - python: {callable: !!python/name:os.system }
     """,
     "job.yaml:3: stages[0].python.callable: the tag !!python/name:os.system is not allowed: "
     "a job holds only plain values (text, numbers, booleans, lists, mappings)",
     "stages[0].python.callable", 3),
    ("a local tag",
     """
     source: {file: !env LOG}
     """,
     "job.yaml:1: source.file: the tag !env is not allowed: a job holds only plain values "
     "(text, numbers, booleans, lists, mappings)", "source.file", 1),
    ("a binary tag",
     """
     source: {file: !!binary YS5sb2c=}
     """,
     "job.yaml:1: source.file: the tag !!binary is not allowed: a job holds only plain values "
     "(text, numbers, booleans, lists, mappings)", "source.file", 1),
    # ------------------------------------------------ documents
    ("two documents",
     """
     source: {file: a.log}
     ---
     workers: 2
     """,
     "job.yaml:2: invalid YAML: expected a single document in the stream, but found another "
     "document", "", 2),
    ("tab before a list item",
     "source: {file: a.log}\nstages:\n\t- passthrough\n",
     "job.yaml:3: invalid YAML: found character '\\t' that cannot start any token (indent "
     "with spaces: YAML does not allow tabs)", "", 3),
]


@pytest.mark.parametrize("text, message, path, line",
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_config_error(config_error, text, message, path, line):
    e = config_error(text)
    assert str(e) == message
    assert (e.file, e.path, e.line) == ("job.yaml", path, line)
    assert e.exit_code == 2


def test_duplicate_key(config_error):
    e = config_error("""
        source: {file: a.log}
        workers: 2
        workers: 3
    """)
    assert str(e).startswith("job.yaml:3: ")
    assert str(e) == ("job.yaml:3: workers: duplicate key 'workers' (first on line 2): remove "
                      "one of them")
    assert (e.file, e.path, e.line) == ("job.yaml", "workers", 3)


def test_nested_duplicate_key(config_error):
    e = config_error("""
        source: {file: a.log}
        stages:
          - grep:
              pattern: x
              pattern: y
    """)
    assert str(e) == ("job.yaml:5: stages[0].grep.pattern: duplicate key 'pattern' (first on "
                      "line 4): remove one of them")


def test_duplicate_key_names_its_config_path(config_error):
    e = config_error("""
        source: {file: a.log}
        stages:
          - grep:
              pattern: x
              pattern: y
    """)
    assert e.path == "stages[0].grep.pattern"
    assert str(e).startswith("job.yaml:5: stages[0].grep.pattern: duplicate key 'pattern'")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "# one\n\n  # two\n", "---\n"])
def test_empty_job(config_error, text):
    e = config_error(text)
    assert str(e) == "job.yaml: the job is empty: it needs at least a `source`"
    assert e.line is None


def test_job_that_is_not_a_mapping(config_error):
    e = config_error("- a\n- b\n")
    assert str(e) == ("job.yaml:1: a job is a mapping with `source`, `stages`, `sink`..., "
                      "not a list")


def test_yaml_syntax_error_has_its_line(config_error):
    e = config_error("""
        source: {file: a.log}
        stages:
          - grep: {pattern: x
        workers: 2
    """)
    assert str(e) == "job.yaml:4: invalid YAML: expected ',' or '}', but got ':'"
    assert e.line == 4


def test_yaml_tab_indent_has_its_line(config_error):
    e = config_error("source: {file: a.log}\n\tworkers: 2\n")
    assert str(e) == ("job.yaml:2: invalid YAML: found character '\\t' that cannot start any "
                      "token (indent with spaces: YAML does not allow tabs)")


def test_missing_job_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_job(missing)
    assert str(info.value) == f"{missing}: cannot read the job: No such file or directory"


def test_job_that_is_not_utf8(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_bytes(b"source: {file: \xff.log}\n")
    with pytest.raises(ConfigError) as info:
        load_job(str(path))
    assert str(info.value) == f"{path}: the job is not UTF-8 text (invalid start byte at byte 15)"


def test_python_missing_attribute(config_error, udf):
    e = config_error(f"""
        source: {{file: a.log}}
        stages:
          - python:
              callable: "{udf}:nope"
    """)
    assert str(e) == (f"job.yaml:4: stages[0].python.callable: AttributeError: module "
                      f"'{udf}' has no attribute 'nope'")


def test_python_not_callable(config_error, udf):
    e = config_error(f"""
        source: {{file: a.log}}
        stages:
          - python: {{callable: "{udf}:NOT_CALLABLE"}}
    """)
    assert str(e) == (f"job.yaml:3: stages[0].python.callable: TypeError: "
                      f"{udf}:NOT_CALLABLE is not callable")


def test_python_wrong_signature(config_error, udf):
    e = config_error(f"""
        source: {{file: a.log}}
        stages:
          - passthrough
          - python:
              callable: "{udf}:two"
    """)
    assert str(e) == (f"job.yaml:5: stages[1].python.callable: TypeError: {udf}:two cannot be "
                      f"called with one argument: missing a required argument: 'other'")
    assert e.path == "stages[1].python.callable"


def test_python_args_that_the_function_does_not_take(config_error, udf):
    e = config_error(f"""
        source: {{file: a.log}}
        stages:
          - python: {{callable: "{udf}:good", args: {{level: 3}}}}
    """)
    assert str(e) == (f"job.yaml:3: stages[0].python.callable: TypeError: {udf}:good cannot "
                      f"be called with one argument and level: got an unexpected keyword "
                      f"argument 'level'")


# ---------------------------------------------------------------------------- engine bugs
def test_unknown_key_points_at_the_key_line_not_its_value(config_error):
    e = config_error("""
        sorce:
          file: a.log
    """)
    assert str(e) == "job.yaml:1: sorce: unknown key 'sorce'; did you mean 'source'?"


def test_unquoted_null_sink_key(job_file):
    # YAML 1.1 reads a bare `null` key as None; the documented `sink: {null: true}` must work
    job = load_job(job_file("source: {file: a.log}\nsink: {null: true}\n"))
    assert isinstance(job.sink, NullSink)


def test_non_string_key_is_reported_on_its_line(config_error):
    e = config_error("""
        source: {file: a.log}
        3: workers
    """)
    assert "`" not in e.path
    assert e.line == 2
    assert str(e).startswith("job.yaml:2: ")
    assert "3" in str(e).removeprefix("job.yaml:2: ")


# ---------------------------------------------------------------------------- values accepted
@pytest.mark.parametrize("value, seconds", [
    ("30", 30.0), ("1.5", 1.5), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0),
    ("'30'", 30.0),
])
def test_chunk_timeout_accepts_seconds_and_units(job_file, value, seconds):
    job = load_job(job_file(f"source: {{file: a.log}}\nchunk_timeout: {value}\n"))
    assert job.spec.chunk_timeout == seconds


def test_new_keys_default_to_off(job_file):
    spec = load_job(job_file("source: {file: a.log}\n")).spec
    assert (spec.chunk_timeout, spec.worker_max_chunks) == (None, None)
    spec = load_job(job_file("source: {file: a.log}\nworker_max_chunks: 1\n")).spec
    assert spec.worker_max_chunks == 1


@pytest.mark.parametrize("value, expected", [
    ("no", False), ("off", False), ("false", False), ("yes", True), ("On", True),
    ("true", True),
])
def test_yaml_booleans_are_accepted_where_a_boolean_is_expected(job_file, value, expected):
    # decided: `ordered: no` means false; only where text is expected is a YAML 1.1 boolean
    # an error (the `pattern: no` case above)
    assert load_job(job_file(f"source: {{file: a.log}}\nordered: {value}\n")).spec.ordered \
        is expected


def test_decimal_numbers_and_quoted_text_are_kept(job_file):
    job = load_job(job_file("""
        source: {file: '0755'}
        stages:
          - grep: {pattern: '0x10'}
          - grep: {pattern: "yes"}
        workers: 1_0
        memory_limit: '0755'
    """))
    assert job.source.patterns == ["0755"]
    assert [s.pattern for s in job.stages] == ["0x10", "yes"]
    assert job.spec.workers == 10
    assert parse_size(job.spec.memory_limit) == 755


def test_anchors_aliases_and_merge_keys_work(job_file):
    job = load_job(job_file("""
        source: {file: a.log}
        stages:
          - grep: &errors {pattern: ERROR, ignore_case: true}
          - grep: {<<: *errors, invert: true}
          - grep: *errors
    """))
    assert [(s.pattern, s.ignore_case, s.invert) for s in job.stages] == \
        [("ERROR", True, False), ("ERROR", True, True), ("ERROR", True, False)]


# ============================================================================ YAML security
@pytest.mark.parametrize("value", ['!!python/object/apply:os.system ["touch pwned"]',
                                   '!!python/object/new:os.system ["touch pwned"]',
                                   "!!python/name:os.system"])
def test_python_tags_are_refused_and_run_nothing(config_error, tmp_path, value):
    e = config_error(f"source: {{file: a.log}}\nworkers: {value}\n")
    tag = value.split()[0]
    assert str(e) == (f"job.yaml:2: workers: the tag {tag} is not allowed: a job holds only "
                      f"plain values (text, numbers, booleans, lists, mappings)")
    assert not (tmp_path / "pwned").exists()


def test_python_tag_in_set_is_refused(job_file, tmp_path):
    name = job_file("source: {file: a.log}\n")
    with pytest.raises(ConfigError) as info:
        load_job(name, ['workers=!!python/object/apply:os.system ["touch pwned"]'])
    assert str(info.value) == ("--set workers: the tag !!python/object/apply:os.system is not "
                               "allowed: a job holds only plain values (text, numbers, "
                               "booleans, lists, mappings)")
    assert not (tmp_path / "pwned").exists()


def test_yaml_surprise_in_set_is_refused(job_file):
    with pytest.raises(ConfigError) as info:
        load_job(job_file("source: {file: a.log}\n"), ["memory_limit=0755"])
    assert str(info.value) == ("--set memory_limit: YAML 1.1 reads 0755 as the octal number "
                               "493: write numbers in decimal, or quote it ('0755') to keep "
                               "the text")


def billion_laughs(levels: int = 9) -> str:
    """`a` is 9 strings, `b` 9 aliases of `a`, ... `i`: 9^9 (387 million) strings."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, cur in zip("abcdefghi", "bcdefghi"[:levels - 1]):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "source: {file: a.log}\n" + "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_quickly_and_small(config_error):
    text = billion_laughs()
    assert len(text) < 1000
    start = time.perf_counter()
    e = config_error(text)
    assert time.perf_counter() - start < 1.0
    assert str(e) == ("job.yaml:2: the job expands to more than 100000 values (each use of an "
                      "alias such as *name counts): refused, a job is a short document")
    tracemalloc.start()
    try:
        config_error(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB


def test_a_few_aliases_are_fine(job_file):
    # 9^4 = 6561 values once expanded: under the bound, refused only for the unknown key
    with pytest.raises(ConfigError, match=r"^job.yaml:2: a: unknown key 'a'"):
        load_job(job_file(billion_laughs(levels=4)))


@pytest.mark.parametrize("text", ["source: &s {file: a.log, range: *s}\n",
                                  "source: {file: &f [a.log, *f]}\n"])
def test_recursive_alias_is_refused(config_error, text):
    e = config_error(text)
    assert str(e) == "job.yaml:1: the job nests more than 50 levels deep: refused, a job is a " \
                     "short document"


def test_deep_nesting_is_refused_before_python_recursion(config_error):
    start = time.perf_counter()
    e = config_error("source: {file: a.log}\nstages: " + "[" * 5000 + "]" * 5000 + "\n")
    assert time.perf_counter() - start < 1.0
    assert str(e) == "job.yaml:2: the job nests more than 50 levels deep: refused, a job is a " \
                     "short document"


def test_a_job_larger_than_1_mib_is_refused(config_error):
    e = config_error("source: {file: a.log}\n" + "# padding\n" * 110_000)
    assert str(e) == ("job.yaml: the job is larger than 1 MiB: a job is a short YAML document "
                      "(is this the right file?)")


# ============================================================================ --set
BASE = """
    source: {file: a.log}
    stages:
      - grep: {pattern: x}
    sink: {file: o.log}
"""


def test_set_overrides(job_file):
    job = load_job(job_file(BASE), ["workers=4", "sink.file=out.log",
                                    "stages[0].grep.invert=true", "memory_limit=64MiB",
                                    "ordered=false"])
    assert job.spec.workers == 4
    assert isinstance(job.sink, FileSink) and job.sink.path == "out.log"
    assert job.stages[0].invert is True
    assert job.stages[0].pattern == "x"                 # the rest of the stage is kept
    assert parse_size(job.spec.memory_limit) == 64 * MiB
    assert job.spec.ordered is False


def test_set_values_are_yaml_scalars(job_file):
    name = job_file(BASE)
    assert load_job(name, ["workers=4"]).spec.workers == 4                   # int, not "4"
    assert load_job(name, ["stages[0].grep.pattern='123'"]).stages[0].pattern == "123"
    assert load_job(name, ["stages[0].grep.invert=yes"]).stages[0].invert is True
    assert load_job(name, ["source.file=[a.log, b.log]"]).source.patterns == ["a.log", "b.log"]
    # text that is not valid YAML is taken as it is
    assert load_job(name, ["source.file=[a.log"]).source.patterns == ["[a.log"]
    e = pytest.raises(ConfigError, load_job, name, ["stages[0].grep.pattern=123"]).value
    assert e.path == "stages[0].grep.pattern" and "expected `str`, got `int`" in str(e)


def test_set_can_append_a_stage_and_create_sections(job_file):
    job = load_job(job_file("source: {file: a.log}\n"),
                   ["stages[0]=passthrough", "source.range.start=1KiB"])
    assert [s.name for s in job.stages] == ["passthrough"]
    assert job.source.start == KiB


def test_set_sink_file_over_a_stdout_sink_needs_stdout_off(job_file):
    name = job_file("source: {file: a.log}\nsink: {stdout: true}\n")
    job = load_job(name, ["sink.stdout=false", "sink.file=out.log"])
    assert isinstance(job.sink, FileSink)


@pytest.mark.parametrize("assignment, message", [
    ("stages[5].grep.x=1", "--set stages[5].grep.x: there is no stages[5]"),
    ("sink[0]=1", "--set sink[0]: there is no sink[0]"),
    ("workers", "--set expects path=value, got 'workers'"),
    ("=3", "--set expects path=value, got '=3'"),
])
def test_set_bad_path(job_file, assignment, message):
    with pytest.raises(ConfigError) as info:
        load_job(job_file(BASE), [assignment])
    assert str(info.value) == message


def test_set_unknown_key_is_caught(job_file):
    with pytest.raises(ConfigError, match=r"wrokers: unknown key 'wrokers'; did you mean "
                                          r"'workers'\?"):
        load_job(job_file(BASE), ["wrokers=2"])


def test_bad_set_value_names_the_override_not_a_file_line(job_file):
    with pytest.raises(ConfigError) as info:
        load_job(job_file(BASE), ["workers=many"])
    assert not str(info.value).startswith("job.yaml:1:")
    assert "--set workers" in str(info.value)


# ============================================================================ sizes
@pytest.mark.parametrize("value, expected", [
    (0, 0),
    (4096, 4096),
    ("4096", 4096),
    ("4MiB", 4 * MiB),
    ("4mib", 4 * MiB),
    ("256 MiB", 256 * MiB),
    ("  4 MiB ", 4 * MiB),
    ("1.5GB", 1_500_000_000),
    ("1 GiB", GiB),
    ("12k", 12 * KiB),
    ("12K", 12 * KiB),
    ("12kB", 12_000),
    ("12KB", 12_000),
    ("2M", 2 * MiB),
    ("3MB", 3_000_000),
    ("1T", 1 << 40),
    ("1TB", 10**12),
    ("0.5KiB", 512),
    ("10b", 10),
])
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value, message", [
    ("12 bananas", "expected a size such as 4096, 4MiB or 1.5GB, got '12 bananas'"),
    ("", "expected a size such as 4096, 4MiB or 1.5GB, got ''"),
    ("MiB", "expected a size such as 4096, 4MiB or 1.5GB, got 'MiB'"),
    ("4 MiBs", "expected a size such as 4096, 4MiB or 1.5GB, got '4 MiBs'"),
    ("-1", "expected a size such as 4096, 4MiB or 1.5GB, got '-1'"),
    ("1e3", "expected a size such as 4096, 4MiB or 1.5GB, got '1e3'"),
    ("1,5MB", "expected a size such as 4096, 4MiB or 1.5GB, got '1,5MB'"),
    ("1.5.2k", "expected a size such as 4096, 4MiB or 1.5GB, got '1.5.2k'"),
    (-1, "a size cannot be negative, got -1"),
    (True, "expected a size such as 4MiB, got True"),
])
def test_parse_size_rejects(value, message):
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == message


# ============================================================================ slot plan
def planned_total(workers: int, slot_size: int, slots: int) -> int:
    """The plan's formula, written out here independently of plan.estimate()."""
    return COORDINATOR + workers * WORKER + workers * SCRATCH * slot_size + slots * slot_size


LIMITS = [48 * MiB, 64 * MiB, 81 * MiB, 100 * MiB, 128 * MiB, 200 * MiB + 12345, 256 * MiB,
          512 * MiB, 2 * GiB]
WORKERS = [1, 2, 3, 8, 16]
CHUNKS = [1, 1000, 64 * KiB, 100_000, MiB, 4 * MiB, 5 * MiB, 32 * MiB]
RECORDS = [0, 1000, 200 * KiB, 3 * MiB]


def test_plan_stays_under_the_limit_on_a_grid():
    planned = refused = 0
    for limit, workers, chunk, record in itertools.product(LIMITS, WORKERS, CHUNKS, RECORDS):
        try:
            p = make_plan(workers=workers, chunk_size=chunk, memory_limit=limit,
                          max_record_size=record)
        except ResourceError:
            refused += 1
            continue
        planned += 1
        where = (limit, workers, chunk, record, p)
        assert planned_total(p.workers, p.slot_size, p.slots) <= limit, where
        assert p.estimate() == planned_total(p.workers, p.slot_size, p.slots), where
        assert p.arena_size == p.slots * p.slot_size, where
        assert p.workers == workers and p.memory_limit == limit, where
        assert 2 * workers + 2 <= p.slots <= workers * (2 * p.prefetch + 2) + 2, where
        assert max(record, 1) <= p.slot_size <= max(chunk, record, 1), where
        # the slot size is the starting size halved k times, or clamped to the floor
        start = max(chunk, record, 1)
        floor = max(record, min(MIN_SLOT, start))
        assert any(start >> k == p.slot_size for k in range(64)) or p.slot_size == floor, where
    assert planned > 100 and refused > 10       # the grid covers both outcomes


def test_plan_uses_the_chunk_size_when_there_is_room():
    p = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=512 * MiB)
    assert (p.slot_size, p.slots) == (4 * MiB, 2 * (2 * 2 + 2) + 2)


def test_plan_too_small_names_the_needed_size():
    with pytest.raises(ResourceError) as info:
        make_plan(workers=2, chunk_size=4 * MiB, memory_limit=64 * MiB)
    assert str(info.value) == (
        "memory_limit 64.0 MiB is too small for 2 workers: at least 84541440 bytes "
        "(80.6 MiB) are needed (6 slots of 64.0 KiB plus interpreters); raise memory_limit, "
        "lower workers or max_record_size")
    # and that much is indeed enough (80.6 MiB is 80.625 MiB rounded)
    p = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=COORDINATOR + 2 * WORKER
                  + 2 * SCRATCH * MIN_SLOT + 6 * MIN_SLOT)
    assert p.slot_size == MIN_SLOT


def test_plan_halves_the_slot_under_a_tight_limit():
    # 4 MiB slots: 40 + 2 * (20 + 8) = 96 MiB before any slot; 100 MiB leaves room for one
    p = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=100 * MiB)
    assert p.slot_size == 2 * MiB
    assert p.slots == 6
    assert planned_total(2, p.slot_size, p.slots) <= 100 * MiB


def test_plan_never_shrinks_below_the_largest_record():
    p = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=100 * MiB, max_record_size=MiB)
    assert p.slot_size == 2 * MiB
    p = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=90 * MiB, max_record_size=MiB)
    assert p.slot_size == MiB
    with pytest.raises(ResourceError, match=r"6 slots of 1\.0 MiB"):
        make_plan(workers=2, chunk_size=4 * MiB, memory_limit=80 * MiB, max_record_size=MiB)


def test_plan_record_larger_than_chunk_sets_the_slot():
    p = make_plan(workers=1, chunk_size=64 * KiB, memory_limit=512 * MiB,
                  max_record_size=8 * MiB)
    assert p.slot_size == 8 * MiB


def _needed(message: str) -> int:
    m = re.search(r"at least (\d+) bytes", message)
    assert m, message
    return int(m.group(1))                          # exact: that much must be enough


@pytest.mark.parametrize("chunk, record", [
    (4 * MiB, 0),          # powers of two halve exactly down to the 64 KiB floor
    (1000, 0),             # below the floor: the chunk is the slot
])
def test_plan_needed_size_is_enough(chunk, record):
    with pytest.raises(ResourceError) as info:
        make_plan(workers=2, chunk_size=chunk, memory_limit=50 * MiB, max_record_size=record)
    make_plan(workers=2, chunk_size=chunk, memory_limit=_needed(str(info.value)),
              max_record_size=record)


@pytest.mark.parametrize("chunk, record", [
    (4 * MiB, 3 * MiB),    # 4 MiB cannot halve to 3 MiB: says 110 MiB, needs 120 MiB
    (100_000, 0),          # 100000 cannot halve to 64 KiB: says 80.6 MiB, needs 81.0 MiB
    (5 * MiB, 0),          # 5 MiB -> ... -> 80 KiB, not 64 KiB
])
def test_plan_needed_size_is_enough_when_halving_misses_the_floor(chunk, record):
    with pytest.raises(ResourceError) as info:
        make_plan(workers=2, chunk_size=chunk, memory_limit=50 * MiB, max_record_size=record)
    make_plan(workers=2, chunk_size=chunk, memory_limit=_needed(str(info.value)),
              max_record_size=record)


@pytest.mark.parametrize("stages,path,message", [
    ("[grep: {pattern: x}, decompress]", "stages[1]",
     "decompress decodes the source's bytes, so it must be the first stage"),
    ("[gzip, grep: {pattern: x}]", "stages[0]",
     "gzip writes a container header and trailer, so it must be the last stage"),
    ("[gzip: {level: 10}]", "stages[0].gzip.level", "<= 9"),
    ("[gzip: {backend: isal, level: 6}]", "stages[0].gzip.backend",
     "backend isal supports levels 0-3, not 6"),
    ("[bgzf: {backend: brotli}]", "stages[0].bgzf.backend", "brotli"),
    ("[decompress: {format: rar}]", "stages[0].decompress.format", "rar"),
])
def test_codec_stage_placement_and_options(tmp_path, stages, path, message):
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {{file: a.log}}\nstages: {stages}\nsink: {{file: o}}\n")
    with pytest.raises(ConfigError) as info:
        load_job(str(job))
    assert f": {path}: " in str(info.value)
    assert message in str(info.value)


def test_keep_cache_goes_with_file_and_directory_sinks(job_file, config_error):
    job = load_job(job_file("source: {file: a.log}\nsink: {file: out.log, keep_cache: true}\n"))
    assert job.sink.keep_cache is True
    job = load_job(job_file("source: {file: a.log}\nsink: {file: out.log}\n"))
    assert job.sink.keep_cache is False
    e = config_error("source: {file: a.log}\nsink: {stdout: true, keep_cache: true}\n")
    assert "sink.keep_cache: keep_cache goes with a file or directory sink, not stdout" in str(e)
