"""What ``coopasd config show`` prints: every key of a config with its value, default, unit and meaning,
read from the ``# [unit] meaning`` comments of :mod:`coopasd.config.settings`."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

import tomli_w

from coopasd.config.settings import RunConfig


@dataclass(frozen=True)
class ConfigEntry:
    """One key of the effective config, as ``coopasd config show`` prints it."""

    section: str
    key: str
    value: Any
    default: Any
    unit: str  # from the field's ``# [unit] meaning`` comment; "" where none
    meaning: str

    @property
    def changed(self) -> bool:
        return self.value != self.default


def field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """``{field: (unit, meaning)}`` of a config dataclass, read from each field's ``# [unit] meaning`` comment.

    The comments in :mod:`coopasd.config.settings` are the one source of every key's documentation.
    """
    source = textwrap.dedent(inspect.getsource(cls))
    lines = io.StringIO(source).readline
    comments = {t.start[0]: t.string for t in tokenize.generate_tokens(lines) if t.type == tokenize.COMMENT}
    docs: dict[str, tuple[str, str]] = {}
    for node in typing.cast(ast.ClassDef, ast.parse(source).body[0]).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = comments.get(node.end_lineno or node.lineno, "").lstrip("#").strip()
            unit = re.match(r"\[([^\]]+)\]\s*", text)
            docs[node.target.id] = (unit[1], text[unit.end() :]) if unit else ("", text)
    return docs


def describe(config: RunConfig) -> list[ConfigEntry]:
    """Every key of ``config`` with its default, unit and meaning, section by section."""
    defaults = RunConfig()
    entries = []
    for section in dataclasses.fields(RunConfig):
        values, default = getattr(config, section.name), getattr(defaults, section.name)
        for name, (unit, meaning) in field_docs(type(values)).items():
            entries.append(
                ConfigEntry(section.name, name, getattr(values, name), getattr(default, name), unit, meaning)
            )
    return entries


CONFIG_COLUMNS = ("key", "value", "default", "unit", "meaning")  # of config_rows


def config_rows(config: RunConfig) -> list[tuple[str, ...]]:
    """The table of ``coopasd config show``: a one-cell ``[section]`` row before each section's keys,
    then one row per key (:data:`CONFIG_COLUMNS`); a key whose value differs from its default starts with ``*``."""
    rows: list[tuple[str, ...]] = []
    section = ""
    for e in describe(config):
        if e.section != section:
            section = e.section
            rows.append((f"[{section}]",))
        marked = f"{'*' if e.changed else ' '}{e.key}"
        rows.append((marked, toml_value(e.value), toml_value(e.default), e.unit, e.meaning))
    return rows


def toml_value(value: Any) -> str:
    """A value as TOML writes it (strings quoted, booleans lower case)."""
    return tomli_w.dumps({"v": value})[len("v = ") :].strip()


def commented_toml(config: RunConfig, header: str = "") -> str:
    """``config`` as TOML with every key and its ``# [unit] meaning`` comment (a valid ``--config`` file);
    a key that differs from its default says the default."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    section = ""
    for entry in describe(config):
        if entry.section != section:
            section = entry.section
            doc = inspect.getdoc(type(getattr(config, section))) or ""
            lines += ["", f"[{section}]  # {doc.splitlines()[0]}" if doc else f"[{section}]"]
        unit = f"[{entry.unit}] " if entry.unit else ""
        default = f" (default {toml_value(entry.default)})" if entry.changed else ""
        lines.append(f"{entry.key} = {toml_value(entry.value)}  # {unit}{entry.meaning}{default}")
    return "\n".join(lines).lstrip("\n") + "\n"
