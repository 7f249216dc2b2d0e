"""MkDocs hook: the settings page's tables, built from the code at build time so they cannot drift.

``<!-- settings-table -->`` becomes one row per field of :class:`embedserve.settings.Settings`
(its ``embedserve serve`` flag, ``EMBEDSERVE_*`` variable, type, default and description), and
``<!-- cli-help: COMMAND -->`` the ``--help`` text of that subcommand. A field without a
description stops the build.
"""

from __future__ import annotations

import argparse
import importlib
import re
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from embedserve import cli, settings

TABLE_MARKER = "<!-- settings-table -->"
CLI_MARKER = re.compile(r"<!-- cli-help: ?([a-z-]*) -->")


def on_pre_build(**_: Any) -> None:
    """MkDocs event: ``make docs`` rebuilds when src/ changes; read the settings and the CLI afresh."""
    importlib.reload(settings)
    importlib.reload(cli)


def env_var(name: str, model: type[BaseSettings] | None = None) -> str:
    """The environment variable that sets field ``name``."""
    model = model or settings.Settings
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def serve_flags() -> dict[str, list[str]]:
    """``embedserve serve``'s flags per Settings field they set (argparse's ``dest`` is the field name)."""
    flags: dict[str, list[str]] = {}
    for action in _subparser("serve")._actions:
        if action.dest in settings.Settings.model_fields and action.option_strings:
            flags[action.dest] = list(action.option_strings)
    return flags


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = cli._parser()
    if not command:
        return parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return typing.cast(argparse.ArgumentParser, action.choices[command])
    raise LookupError(f"embedserve has no subcommand {command!r}")


def cli_help(command: str) -> str:
    """``embedserve [COMMAND] --help`` as the terminal shows it (80 columns)."""
    parser = _subparser(command)
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=80)
    return parser.format_help()


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        return _type_text(inner) + _bounds(metadata)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is list:
        return f"comma-separated {_type_text(typing.get_args(annotation)[0])}s"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    if isinstance(annotation, type) and annotation in names:
        return names[annotation]
    return f"`{getattr(annotation, '__name__', annotation)}`"


def _bounds(metadata: list[Any]) -> str:
    """pydantic's constraints (``Gt(0)``, ``Le(65535)``, ...) as `` (> 0, ≤ 65535)``."""
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    parts = [f"{sign} {getattr(m, attr)}" for m in metadata for attr, sign in signs.items() if hasattr(m, attr)]
    return f" ({', '.join(parts)})" if parts else ""


def default_text(field: FieldInfo) -> str:
    """The field's default as it is written in the environment, or ``(none)``."""
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is PydanticUndefined:
        return "(required)"
    if value is None or value == []:
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`"
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_rows(model: type[BaseSettings] | None = None) -> list[dict[str, str]]:
    """One row per field of ``model`` (default: Settings), in its order; a field without a description
    is an error."""
    model = model or settings.Settings
    flags = serve_flags()
    rows = []
    for name, field in model.model_fields.items():
        if not (field.description or "").strip():
            raise ValueError(f"Settings.{name} has no description: give it Field(description=...)")
        rows.append(
            {
                "name": name,
                "env": env_var(name, model),
                "flag": ", ".join(f"`{flag}`" for flag in flags.get(name, [])),
                "type": _type_text(field.annotation) + _bounds(field.metadata),
                "default": default_text(field),
                "description": _cell(field.description or ""),
            }
        )
    return rows


def settings_table() -> str:
    """The settings page's table, in Markdown."""
    lines = ["| environment | flag | type | default | what |", "|---|---|---|---|---|"]
    for row in settings_rows():
        cells = [f"`{row['env']}`", row["flag"], row["type"], row["default"], row["description"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(markdown: str) -> str:
    """Replace every marker of this hook in a page's Markdown."""
    if TABLE_MARKER in markdown:
        markdown = markdown.replace(TABLE_MARKER, settings_table())
    return CLI_MARKER.sub(lambda m: f"```text\n{cli_help(m.group(1)).rstrip()}\n```", markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: every page goes through :func:`render`; a failure stops the build with its reason."""
    from mkdocs.exceptions import PluginError

    try:
        return render(markdown)
    except (LookupError, ValueError, OSError) as exc:
        raise PluginError(f"{__name__}: {exc}") from exc
