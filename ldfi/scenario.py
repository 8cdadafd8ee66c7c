"""The scenario file: parse and validate the TOML a user writes, before anything runs.

Every mistake becomes one UserError line, `<file>:<line>: <what> (<key>); <fix>`,
so that a typo costs seconds, not a sandbox set-up and a timeout. Nothing here
touches the system: the only side effects are reads (the file, `cwd`s, PATH).

The accepted keys live in one table, SCHEMA; extend it (and docs/scenario.md)
to add keys or tables.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import shlex
import shutil
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ldfi.durations import DURATION_FORMS, parse_duration
from ldfi.errors import UserError

__all__ = [
    "SCHEMA",
    "Command",
    "Key",
    "Node",
    "Ready",
    "Scenario",
    "TemplateError",
    "load_scenario",
    "parse_duration",
    "placeholders",
    "render",
]

ReadyKind = Literal["none", "tcp", "udp", "log", "delay", "cmd"]

NODE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,19}")
# Placeholders the engine fills in besides node names, so no node may be called so;
# "client" is the namespace of the workload and the check.
# workload and check: their logs share the run's logs/ folder with the nodes'
RESERVED_NAMES = ("workdir", "scenario_dir", "node", "client", "workload", "check")
SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_NODES = 200  # the run's /24 holds the client and nodes from .10 up
CLIENT = "client"


# --- the result -----------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """When a node counts as started. `kind` says which one field is set."""

    kind: ReadyKind
    port: int | None = None  # tcp, udp
    pattern: str | None = None  # log
    delay: float | None = None  # delay
    cmd: str | None = None  # cmd (a template)
    timeout: float = 10.0


@dataclass(frozen=True)
class Command:
    """The workload or the check: a template, run in the client namespace."""

    cmd: str
    cwd: Path
    env: dict[str, str] = field(hash=False)
    timeout: float | None  # None: only the run's timeout bounds it
    # check only: the exit status meaning "good, but only vacuously" (Molly's
    # precondition did not hold, e.g. nobody delivered anything): the run
    # passes, and the search learns no lineage from it
    vacuous_exit: int | None = None


@dataclass(frozen=True)
class Node:
    name: str
    cmd: str  # a template
    cwd: Path
    env: dict[str, str] = field(hash=False)  # values are templates
    ready: Ready
    stop_timeout: float


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path  # absolute
    dir: Path  # absolute; {scenario_dir}
    timeout: float
    settle: float
    nodes: tuple[Node, ...]
    workload: Command
    check: Command
    # [faults] and [outcome] as validated values (every key present, None =
    # not given); the solver and the lineage give them meaning
    faults: Mapping[str, Any] = field(default_factory=dict)
    outcome: Mapping[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r} in scenario {self.name!r}")

    def placeholder_values(
        self, addresses: Mapping[str, str], workdir: str | os.PathLike[str], node: str,
        addresses6: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """What render() needs for a command that runs in `node` ("client" for the
        workload and the check), given every node's IPv4 (and IPv6) address."""
        missing = [n.name for n in self.nodes if n.name not in addresses]
        if missing:
            raise ValueError(f"no address for node(s) {', '.join(missing)}")
        six = addresses6 or {}
        return {
            **{n.name: addresses[n.name] for n in self.nodes},
            **{f"{n.name}{IPV6_SUFFIX}": six[n.name] for n in self.nodes if n.name in six},
            "workdir": os.fspath(workdir),
            "scenario_dir": str(self.dir),
            "node": node,
        }


# --- the schema: every accepted key, in one place --------------------------------


@dataclass(frozen=True)
class Key:
    """One accepted key. `kind` names a converter in _CONVERTERS; a "table" or
    "tables" key is checked against the SCHEMA entry of the same name."""

    kind: str
    required: bool = False
    default: Any = None


_COMMAND_KEYS = {
    "cmd": Key("command", required=True),
    "timeout": Key("timeout"),
    "cwd": Key("dir"),
    "env": Key("env"),
}

SCHEMA: dict[str, dict[str, Key]] = {
    "scenario": {
        "name": Key("scenario_name", required=True),
        "run": Key("table"),
        "node": Key("tables", required=True),
        "workload": Key("table", required=True),
        "check": Key("table", required=True),
        "faults": Key("table"),
        "outcome": Key("table"),
    },
    "run": {
        "timeout": Key("timeout", default=60.0),
        "settle": Key("duration", default=0.0),
    },
    "node": {
        "name": Key("node_name", required=True),
        "cmd": Key("command", required=True),
        "cwd": Key("dir"),
        "env": Key("env"),
        "ready": Key("table"),
        "stop_timeout": Key("timeout", default=2.0),
    },
    "workload": _COMMAND_KEYS,
    "check": {**_COMMAND_KEYS, "vacuous_exit": Key("exit_status")},
    # the default fault budget of `ldfi run` (flags override each key)
    "faults": {
        "kinds": Key("names"),
        "max_faults": Key("positive_count"),
        "max_crashes": Key("count"),
        "per_kind": Key("counts"),
        "horizon": Key("positive_count"),
        "include_client": Key("flag"),
    },
    # what the good outcome is, when "the client's causal past" is too broad
    "outcome": {
        "node": Key("text"),
        "payload": Key("regex"),
        "on": Key("text"),
    },
    "ready": {
        "tcp": Key("port"),
        "udp": Key("port"),
        "log": Key("regex"),
        "delay": Key("duration"),
        "cmd": Key("command"),
        "timeout": Key("timeout", default=10.0),
    },
}

READY_KINDS: tuple[ReadyKind, ...] = ("tcp", "udp", "log", "delay", "cmd")


# --- placeholders -----------------------------------------------------------------


class TemplateError(ValueError):
    """A malformed template, or a placeholder with no value."""


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*(?:\.ipv6)?)\}")
IPV6_SUFFIX = ".ipv6"  # {NAME.ipv6}: the node's IPv6 address


def _tokens(template: str) -> Iterator[tuple[str, bool]]:
    """(text, is_placeholder) pieces. `{{`/`}}` are braces; `${...}` is the
    shell's, so it passes through, braces and all."""
    literal: list[str] = []
    shell_depth = 0  # open `${` whose `}` belongs to the shell
    i = 0
    while i < len(template):
        char = template[i]
        if char == "$" and template.startswith("{", i + 1):
            literal.append("${")
            shell_depth += 1
            i += 2
        elif char == "{" and template.startswith("{{", i):
            literal.append("{")
            i += 2
        elif char == "{":
            match = _PLACEHOLDER.match(template, i)
            if match is None:
                raise TemplateError(
                    f"malformed placeholder {_snippet(template, i)!r} at column {i + 1}"
                )
            if literal:
                yield "".join(literal), False
                literal = []
            yield match[1], True
            i = match.end()
        elif char == "}" and shell_depth:
            literal.append("}")
            shell_depth -= 1
            i += 1
        elif char == "}" and template.startswith("}}", i):
            literal.append("}")
            i += 2
        elif char == "}":
            raise TemplateError(f"single '}}' at column {i + 1}")
        else:
            literal.append(char)
            i += 1
    if literal:
        yield "".join(literal), False


def _snippet(text: str, start: int) -> str:
    end = text.find("}", start)
    end = len(text) if end < 0 else end + 1
    return text[start : min(end, start + 20)]


def placeholders(template: str) -> set[str]:
    """Names of the placeholders in `template`; TemplateError if malformed."""
    return {text for text, is_name in _tokens(template) if is_name}


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `{name}` replaced by values[name], `{{`/`}}` by braces
    and `${...}` left alone; TemplateError if malformed or a name has no value."""
    out = []
    for text, is_name in _tokens(template):
        if is_name and text not in values:
            raise TemplateError(f"unknown placeholder '{{{text}}}'")
        out.append(str(values[text]) if is_name else text)
    return "".join(out)


# --- where a key is in the file ------------------------------------------------------

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED_KEY = rf"{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*"
_ARRAY_HEADER = re.compile(rf"[ \t]*\[\[[ \t]*({_DOTTED_KEY})[ \t]*\]\]")
_TABLE_HEADER = re.compile(rf"[ \t]*\[[ \t]*({_DOTTED_KEY})[ \t]*\]")
_ASSIGNMENT = re.compile(rf"[ \t]*({_DOTTED_KEY})[ \t]*=")

TomlPath = tuple[str | int, ...]


def _key_parts(key_text: str) -> tuple[str, ...]:
    # tomllib already knows quoting and escapes; let it split the dotted key.
    doc: Any = tomllib.loads(f"{key_text} = 0")
    parts = []
    while isinstance(doc, dict):
        ((name, doc),) = doc.items()
        parts.append(name)
    return tuple(parts)


class _Lines:
    """Line numbers of table headers and key assignments, by document path
    (`("node", 1, "ready")` is the second [[node]]'s ready). tomllib keeps no
    positions, so this re-reads the (already valid) text line by line."""

    def __init__(self, text: str) -> None:
        self._lines: dict[TomlPath, int] = {}
        self._arrays: dict[TomlPath, int] = {}  # array-of-tables path -> current index
        self._scan(text.splitlines())

    def line(self, path: Sequence[str | int]) -> int:
        """The line of `path`, else of its nearest recorded parent, else 1."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return 1

    def _scan(self, lines: list[str]) -> None:
        table: TomlPath = ()
        i = 0
        while i < len(lines):
            if match := _ARRAY_HEADER.match(lines[i]):
                table = self._open_array(_key_parts(match[1]))
                self._record(table, i + 1)
            elif match := _TABLE_HEADER.match(lines[i]):
                table = self._resolve(_key_parts(match[1]))
                self._record(table, i + 1)
            elif match := _ASSIGNMENT.match(lines[i]):
                self._record(table + _key_parts(match[1]), i + 1)
                i = _value_end(lines, i)
            i += 1

    def _record(self, path: TomlPath, line: int) -> None:
        # the first line wins for parents too: `ready.tcp = 1` also places `ready`
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], line)

    def _resolve(self, parts: tuple[str, ...]) -> TomlPath:
        # `[node.ready]` means the ready of the latest [[node]]
        path: TomlPath = ()
        for part in parts:
            path += (part,)
            if path in self._arrays:
                path += (self._arrays[path],)
        return path

    def _open_array(self, parts: tuple[str, ...]) -> TomlPath:
        array = (*self._resolve(parts[:-1]), parts[-1])
        self._arrays[array] = self._arrays.get(array, -1) + 1
        return (*array, self._arrays[array])


def _value_end(lines: list[str], start: int) -> int:
    """Index of the last line of the value assigned on lines[start], so that
    multi-line strings and arrays are never mistaken for keys or headers."""
    for end in range(start, len(lines)):
        try:
            tomllib.loads("\n".join(lines[start : end + 1]))
        except tomllib.TOMLDecodeError:
            continue
        return end
    return start


# --- errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """A table in the document: its path (for the line) and how messages name it."""

    path: TomlPath
    table: str  # "" (top level), "[run]", "[[node]] 'server'"
    keys: tuple[str, ...] = ()  # dotted prefix inside the table: ("ready",)

    def sub(self, key: str) -> _Where:
        return _Where((*self.path, key), self.table, (*self.keys, key))

    def label(self, key: str | None) -> str:
        dotted = ".".join(_key_text(k) for k in (*self.keys, *([key] if key else [])))
        return " ".join(part for part in (self.table, dotted) if part)


def _key_text(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


@dataclass
class _Context:
    shown: str  # the file as the user named it
    dir: Path
    lines: _Lines
    node_names: tuple[str, ...] = ()

    def error(self, where: _Where, key: str | None, what: str, fix: str) -> UserError:
        path = (*where.path, key) if key else where.path
        line = self.lines.line(path)
        return UserError(f"{self.shown}:{line}: {what} ({where.label(key)}); {fix}")


def _show(value: Any) -> str:
    # TOML spelling for booleans; repr keeps anything else on one line
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _toml_type(value: Any) -> str:
    kinds = [
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (dict, "table"),
        (list, "array"),
        (datetime.datetime, "date-time"),
        (datetime.date, "date"),
        (datetime.time, "time"),
    ]
    return next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)


def _closest(word: str, choices: Sequence[str], shape: str = "{}") -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{shape.format(close[0])}'? " if close else ""


# --- converters: one per Key.kind -----------------------------------------------------

Converter = Callable[[Any, _Context, _Where, str], Any]


def _wrong_type(
    value: Any, ctx: _Context, where: _Where, key: str, want: str, fix: str
) -> UserError:
    # a whole table or array would drown the message; its type says enough
    got = _toml_type(value)
    got = ("an array" if got == "array" else "a table") if isinstance(value, dict | list) else (
        f"{got} {_show(value)}"
    )
    return ctx.error(where, key, f"{key} must be {want}, not {got}", fix)


def _as_text(value: Any, ctx: _Context, where: _Where, key: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(value, ctx, where, key, "a string", f'quote it: {key} = "..."')
    if not value.strip():
        raise ctx.error(where, key, f"{key} is empty", f"give {key} a value")
    return value


def _as_command(value: Any, ctx: _Context, where: _Where, key: str) -> str:
    if isinstance(value, str) and not value.strip():
        raise ctx.error(where, key, f"{key} is empty", "give the command to run")
    return _as_text(value, ctx, where, key)


def _as_scenario_name(value: Any, ctx: _Context, where: _Where, key: str) -> str:
    name = _as_text(value, ctx, where, key)
    if not SCENARIO_NAME.fullmatch(name):  # it becomes part of run directory names
        raise ctx.error(
            where, key, f"invalid scenario name {name!r}",
            "use 1 to 64 characters: letters, digits, '.', '_' or '-', not starting with "
            "'.', '_' or '-'",
        )
    return name


def _as_node_name(value: Any, ctx: _Context, where: _Where, key: str) -> str:
    name = _as_text(value, ctx, where, key)
    if name in RESERVED_NAMES:
        raise ctx.error(
            where, key, f"node name {name!r} is reserved",
            f"rename the node ({', '.join(RESERVED_NAMES)} are reserved)",
        )
    if not NODE_NAME.fullmatch(name):
        raise ctx.error(
            where, key, f"invalid node name {name!r}",
            "use 1 to 20 characters: a lowercase letter, then lowercase letters, digits, _ or -",
        )
    return name


def _as_duration(value: Any, ctx: _Context, where: _Where, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _wrong_type(value, ctx, where, key, "a duration", f"write {DURATION_FORMS}")
    try:
        return parse_duration(value)
    except ValueError:
        raise ctx.error(
            where, key, f"invalid duration {_show(value)}", f"write {DURATION_FORMS}"
        ) from None


def _as_timeout(value: Any, ctx: _Context, where: _Where, key: str) -> float:
    seconds = _as_duration(value, ctx, where, key)
    if seconds <= 0:
        raise ctx.error(
            where, key, f"{key} must be greater than 0, got {_show(value)}",
            'give a positive duration such as "10s"',
        )
    return seconds


def _as_port(value: Any, ctx: _Context, where: _Where, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(value, ctx, where, key, "a port number", f"write {key} = 7000, unquoted")
    if not 1 <= value <= 65535:
        raise ctx.error(where, key, f"port {value} out of range", "use a port from 1 to 65535")
    return value


def _as_regex(value: Any, ctx: _Context, where: _Where, key: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(value, ctx, where, key, "a string", f'quote it: {key} = "..."')
    try:
        re.compile(value)
    except re.error as err:
        raise ctx.error(
            where, key, f"invalid regular expression {_show(value)}: {err}",
            "fix the pattern (Python re syntax; in TOML prefer '...' strings for backslashes)",
        ) from None
    return value


def _as_dir(value: Any, ctx: _Context, where: _Where, key: str) -> Path:
    text = _as_text(value, ctx, where, key)
    path = (ctx.dir / text).resolve()
    if not path.exists():
        raise ctx.error(
            where, key, f"directory {text!r} does not exist (looked for {path})",
            "create it or fix the path (relative paths start at the scenario file's directory)",
        )
    if not path.is_dir():
        raise ctx.error(
            where, key, f"{text!r} is not a directory ({path})", "point cwd at a directory"
        )
    return path


def _as_env(value: Any, ctx: _Context, where: _Where, key: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _wrong_type(value, ctx, where, key, "a table", f'write {key} = {{ NAME = "value" }}')
    inner = where.sub(key)
    for name, text in value.items():
        if not name or "=" in name or "\0" in name:
            raise ctx.error(
                inner, name, f"invalid environment variable name {name!r}",
                "use a name without '=' such as LOG_LEVEL",
            )
        if not isinstance(text, str):
            raise _wrong_type(text, ctx, inner, name, "a string", f'quote it: {name} = "..."')
    return dict(value)


def _as_table(value: Any, ctx: _Context, where: _Where, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fix = f"write a table with keys from: {', '.join(SCHEMA[key])}"
        raise _wrong_type(value, ctx, where, key, "a table", fix)
    return value


def _as_tables(value: Any, ctx: _Context, where: _Where, key: str) -> list[dict[str, Any]]:
    fix = f"write each one as a [[{key}]] table"
    if not isinstance(value, list):
        raise _wrong_type(value, ctx, where, key, "an array of tables", fix)
    for item in value:
        if not isinstance(item, dict):
            raise _wrong_type(item, ctx, where, key, "an array of tables", fix)
    return value


def _whole_number(value: Any, ctx: _Context, where: _Where, key: str, least: int,
                  hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _wrong_type(value, ctx, where, key, f"a whole number >= {least}", hint)
    return value


def _as_count(value: Any, ctx: _Context, where: _Where, key: str) -> int:
    return _whole_number(value, ctx, where, key, 0, f"write {key} = 1")


def _as_positive_count(value: Any, ctx: _Context, where: _Where, key: str) -> int:
    """max_faults, horizon: 0 would admit no fault, and a search that may try
    none "certifies" after the fault-free run alone."""
    return _whole_number(value, ctx, where, key, 1,
                         f"write {key} = 1; to run once without faults, use 'ldfi run "
                         "--no-faults'")


def _as_exit_status(value: Any, ctx: _Context, where: _Where, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise _wrong_type(value, ctx, where, key, "an exit status from 1 to 255",
                          f"write {key} = 3")
    return value


def _as_flag(value: Any, ctx: _Context, where: _Where, key: str) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type(value, ctx, where, key, "true or false", f"write {key} = true")
    return value


def _as_names(value: Any, ctx: _Context, where: _Where, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _wrong_type(value, ctx, where, key, "a list of names",
                          f'write {key} = ["omission", "crash"]')
    return tuple(value)


def _as_counts(value: Any, ctx: _Context, where: _Where, key: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise _wrong_type(value, ctx, where, key, "a table of counts",
                          f"write {key} = {{ crash = 1 }}")
    return {name: _as_count(v, ctx, where, key) for name, v in value.items()}


_CONVERTERS: dict[str, Converter] = {
    "count": _as_count,
    "positive_count": _as_positive_count,
    "exit_status": _as_exit_status,
    "flag": _as_flag,
    "names": _as_names,
    "counts": _as_counts,
    "text": _as_text,
    "scenario_name": _as_scenario_name,
    "command": _as_command,
    "node_name": _as_node_name,
    "duration": _as_duration,
    "timeout": _as_timeout,
    "port": _as_port,
    "regex": _as_regex,
    "dir": _as_dir,
    "env": _as_env,
    "table": _as_table,
    "tables": _as_tables,
}


def _table(raw: dict[str, Any], schema: str, ctx: _Context, where: _Where) -> dict[str, Any]:
    """raw's values converted per SCHEMA[schema]; every key present, defaults filled in."""
    keys = SCHEMA[schema]
    for key in raw:
        if key not in keys:
            raise ctx.error(
                where, key, f"unknown key {key!r}",
                f"{_closest(key, list(keys))}allowed keys: {', '.join(keys)}",
            )
    values = {}
    for key, spec in keys.items():
        if key in raw:
            values[key] = _CONVERTERS[spec.kind](raw[key], ctx, where, key)
        elif spec.required:
            raise _missing(ctx, where, key, spec)
        else:
            values[key] = spec.default
    return values


def _missing(ctx: _Context, where: _Where, key: str, spec: Key) -> UserError:
    if spec.kind in ("table", "tables"):
        brackets = f"[{key}]" if spec.kind == "table" else f"[[{key}]]"
        needs = ", ".join(k for k, s in SCHEMA[key].items() if s.required)
        return ctx.error(
            where, key, f"missing {brackets} table", f"add a {brackets} table with {needs}"
        )
    return ctx.error(where, key, f"missing required key {key!r}", f"add {key} = ...")


# --- commands: placeholders and whether the program exists ---------------------------

# Words the shell handles itself: there is no program to look for.
_SHELL_WORDS_TEXT = """
    cd echo test [ [[ true false set export unset : . source eval if then else elif fi
    for while until do done case esac select function time ! { } ( ) exit return
    break continue shift trap ulimit umask wait read printf pwd kill command builtin
    type alias local readonly declare typeset let hash getopts jobs fg bg times
"""
_SHELL_WORDS = frozenset(_SHELL_WORDS_TEXT.split())
_VARIABLE_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_DUMMY_ADDRESS = "192.0.2.1"  # TEST-NET-1: never a real address
_DUMMY_ADDRESS6 = "2001:db8::1"  # the documentation prefix: never a real address
_DUMMY_WORKDIR = "/nonexistent/ldfi-workdir"  # created per run, so unknowable now


def _check_template(
    template: str, ctx: _Context, where: _Where, key: str, node: str
) -> dict[str, str]:
    """Fail on malformed or unknown placeholders; return dummy values to render with."""
    values = {name: _DUMMY_ADDRESS for name in ctx.node_names}
    values |= {"workdir": _DUMMY_WORKDIR, "scenario_dir": str(ctx.dir), "node": node}
    values |= {f"{name}{IPV6_SUFFIX}": _DUMMY_ADDRESS6 for name in ctx.node_names}
    braces = "write {{ and }} for literal braces"
    try:
        names = placeholders(template)
    except TemplateError as err:
        raise ctx.error(where, key, str(err), braces) from None
    for name in sorted(names - values.keys()):
        known = ", ".join(f"{{{n}}}" for n in values)
        raise ctx.error(
            where, key, f"unknown placeholder '{{{name}}}'",
            f"{_closest(name, list(values), '{{{}}}')}known placeholders: {known}; {braces}",
        )
    return values


def _check_command(
    template: str, cwd: Path, env: Mapping[str, str], ctx: _Context, where: _Where, key: str,
    node: str,
) -> None:
    values = _check_template(template, ctx, where, key, node)
    try:
        words = _shell_words(render(template, values))
    except ValueError as err:
        raise ctx.error(
            where, key, f"cannot split the command into words: {err}", "balance the quotes"
        ) from None
    program = _program(words)
    if program is None or _unknowable(program):
        return
    if "/" in program:
        _check_executable(program, cwd, ctx, where, key)
        return
    search = render(env["PATH"], values) if "PATH" in env else os.environ.get("PATH", os.defpath)
    if shutil.which(program, path=_absolute_path_list(search, cwd)) is None:
        fix = "fix the command, its env PATH, or install it" if "PATH" in env else (
            "fix the command or install it"
        )
        raise ctx.error(where, key, f"command {program!r} not found on PATH", fix)


def _shell_words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""  # `#` starts a comment only at a word's start in sh
    return list(lexer)


def _program(words: list[str]) -> str | None:
    """The word the shell will run as a program, or None if it runs none we can know."""
    i = 0
    while i < len(words) and _VARIABLE_ASSIGNMENT.match(words[i]):
        i += 1
    if i < len(words) and words[i] == "exec":
        i += 1
        while i < len(words) and words[i].startswith("-") and words[i] != "--":
            i += 2 if words[i] == "-a" else 1
        if i < len(words) and words[i] == "--":
            i += 1
        return words[i] if i < len(words) else None
    if i == len(words) or words[i] in _SHELL_WORDS:
        return None
    return words[i]


def _unknowable(program: str) -> bool:
    # expansions, globs, redirections and per-run paths are only known when it runs
    return (
        any(c in program for c in "$`*?[~")
        or program.startswith(("#", _DUMMY_WORKDIR))
        or not program.strip("|&;<>()")
    )


def _absolute_path_list(search: str, cwd: Path) -> str:
    # the program starts in its own cwd, where relative PATH entries (and "") point
    return os.pathsep.join(str(cwd / entry) for entry in search.split(os.pathsep))


def _check_executable(program: str, cwd: Path, ctx: _Context, where: _Where, key: str) -> None:
    path = cwd / program
    if not path.exists():
        raise ctx.error(
            where, key, f"command {program!r} not found: no file {path}",
            "fix the path (relative paths start at the command's cwd)",
        )
    if path.is_dir() or not os.access(path, os.X_OK):
        raise ctx.error(
            where, key, f"command {program!r} is not executable ({path})",
            f"run 'chmod +x {program}' or start it with its interpreter, e.g. 'python3 {program}'",
        )


# --- building the result ------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the scenario at `path`; UserError on any problem."""
    shown = str(path)
    file = Path(path).resolve()
    text = _read(file, shown)
    doc = _parse(text, shown)
    ctx = _Context(shown=shown, dir=file.parent, lines=_Lines(text))
    return _scenario(doc, file, ctx)


def _read(file: Path, shown: str) -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{shown}: scenario file not found; check the path") from None
    except IsADirectoryError:
        raise UserError(f"{shown}: is a directory; give the scenario .toml file") from None
    except UnicodeDecodeError as err:
        raise UserError(
            f"{shown}: not UTF-8 text (byte {err.start}); save the file as UTF-8"
        ) from None
    except OSError as err:
        raise UserError(f"{shown}: cannot read the file: {err.strerror}; check it") from None


def _parse(text: str, shown: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if at:
            line, where = int(at[1]), f"column {at[2]}"
        else:  # "(at end of document)"
            line, where = max(1, len(text.splitlines())), "end of file"
        what = re.sub(r"\s*\(at [^()]*\)$", "", message)
        raise UserError(
            f"{shown}:{line}: invalid TOML: {what} ({where}); fix the syntax (see https://toml.io)"
        ) from None


def _scenario(doc: dict[str, Any], file: Path, ctx: _Context) -> Scenario:
    top = _table(doc, "scenario", ctx, _Where((), ""))
    run = _table(top["run"] or {}, "run", ctx, _Where(("run",), "[run]"))
    raw_nodes = _node_tables(top["node"], ctx)
    nodes = tuple(_node(values, ctx, where) for values, where in raw_nodes)
    return Scenario(
        name=top["name"],
        path=file,
        dir=ctx.dir,
        timeout=run["timeout"],
        settle=run["settle"],
        nodes=nodes,
        workload=_command(top["workload"], "workload", ctx),
        check=_command(top["check"], "check", ctx),
        faults=_table(top["faults"] or {}, "faults", ctx, _Where(("faults",), "[faults]")),
        outcome=_outcome(top["outcome"] or {}, ctx),
    )


def _outcome(raw: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    where = _Where(("outcome",), "[outcome]")
    values = _table(raw, "outcome", ctx, where)
    node = values["node"]
    if node is not None and node not in ctx.node_names and node != "client":
        raise ctx.error(where, "node", f"no node named {node!r}",
                        f"use one of: {', '.join((*ctx.node_names, 'client'))}")
    return values


def _node_tables(
    raw_nodes: list[dict[str, Any]], ctx: _Context
) -> list[tuple[dict[str, Any], _Where]]:
    """Each [[node]]'s values, checked far enough to know every node's name: a
    command may name any node, including later ones."""
    if not raw_nodes:
        raise ctx.error(
            _Where((), ""), "node", "no nodes", "add at least one [[node]] table with name and cmd"
        )
    if len(raw_nodes) > MAX_NODES:
        raise ctx.error(
            _Where(("node", MAX_NODES), f"[[node]] #{MAX_NODES + 1}"), "name",
            f"{len(raw_nodes)} nodes", f"use at most {MAX_NODES} nodes per scenario",
        )
    tables = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_nodes):
        name = raw.get("name")
        where = _Where(("node", index), f"[[node]] {_node_label(name, index)}")
        values = _table(raw, "node", ctx, where)
        if values["name"] in seen:
            raise ctx.error(
                where, "name", f"duplicate node name {values['name']!r}",
                "give each node a unique name",
            )
        seen.add(values["name"])
        tables.append((values, where))
    ctx.node_names = tuple(values["name"] for values, _ in tables)
    return tables


def _node_label(name: Any, index: int) -> str:
    # only a valid name identifies the node; otherwise count, from 1 as people do
    valid = isinstance(name, str) and NODE_NAME.fullmatch(name) and name not in RESERVED_NAMES
    return f"'{name}'" if valid else f"#{index + 1}"


def _node(values: dict[str, Any], ctx: _Context, where: _Where) -> Node:
    name = values["name"]
    cwd = values["cwd"] or ctx.dir
    env = values["env"] or {}
    # env first: the command check renders env's PATH
    for var, text in env.items():
        _check_template(text, ctx, where.sub("env"), var, name)
    _check_command(values["cmd"], cwd, env, ctx, where, "cmd", name)
    return Node(
        name=name,
        cmd=values["cmd"],
        cwd=cwd,
        env=env,
        ready=_ready(values["ready"], cwd, env, ctx, where.sub("ready"), name),
        stop_timeout=values["stop_timeout"],
    )


def _ready(
    raw: dict[str, Any] | None, cwd: Path, env: Mapping[str, str], ctx: _Context, where: _Where,
    node: str,
) -> Ready:
    if raw is None:
        return Ready(kind="none", timeout=SCHEMA["ready"]["timeout"].default)
    values = _table(raw, "ready", ctx, where)
    given = [kind for kind in READY_KINDS if values[kind] is not None]
    if len(given) != 1:
        got = " and ".join(given) if given else "none"
        raise ctx.error(
            where, None, f"ready needs exactly one of {', '.join(READY_KINDS)}, got {got}",
            "give exactly one (plus an optional timeout), or drop ready: the node is then ready "
            "at once",
        )
    if values["cmd"] is not None:
        _check_command(values["cmd"], cwd, env, ctx, where, "cmd", node)
    port = values["tcp"] if values["tcp"] is not None else values["udp"]
    return Ready(
        kind=given[0],
        port=port,
        pattern=values["log"],
        delay=values["delay"],
        cmd=values["cmd"],
        timeout=values["timeout"],
    )


def _command(raw: dict[str, Any], table: str, ctx: _Context) -> Command:
    where = _Where((table,), f"[{table}]")
    values = _table(raw, table, ctx, where)
    cwd = values["cwd"] or ctx.dir
    env = values["env"] or {}
    for var, text in env.items():
        _check_template(text, ctx, where.sub("env"), var, CLIENT)
    _check_command(values["cmd"], cwd, env, ctx, where, "cmd", CLIENT)
    return Command(cmd=values["cmd"], cwd=cwd, env=env, timeout=values["timeout"],
                   vacuous_exit=values.get("vacuous_exit"))
