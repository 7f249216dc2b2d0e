"""MkDocs hook: which catalogue prompt a dialect's purpose picks, built from the code at build time.

``<!-- prompts: jina -->`` becomes the table of Jina's ``task`` values and the prompt names each
one tries, in order (``embedserve.api.openai.JINA_TASK_PROMPTS``); ``<!-- prompts: cohere -->``
the same for Cohere's ``input_type`` (``embedserve.api.cohere.INPUT_TYPE_PROMPTS``).
"""

from __future__ import annotations

import re
from typing import Any

MARKER = re.compile(r"<!-- prompts: ?([a-z]+) -->")


def purposes(dialect: str) -> dict[str, tuple[str, ...]]:
    """The dialect's purpose values and the prompt names each tries, best first."""
    if dialect == "jina":
        from embedserve.api.openai import JINA_TASK_PROMPTS

        return JINA_TASK_PROMPTS
    if dialect == "cohere":
        from embedserve.api.cohere import INPUT_TYPE_PROMPTS

        return INPUT_TYPE_PROMPTS
    raise LookupError(f"no prompt table for dialect {dialect!r}; known: jina, cohere")


def prompt_table(dialect: str) -> str:
    """A Markdown table: each purpose value and the prompt names it tries."""
    field = {"jina": "task", "cohere": "input_type"}[dialect]
    lines = [f"| `{field}` | prompt names tried, in order |", "|---|---|"]
    for value, names in purposes(dialect).items():
        lines.append(f"| `{value}` | {', '.join(f'`{name}`' for name in names)} |")
    return "\n".join(lines)


def render(markdown: str) -> str:
    """Replace every ``<!-- prompts: DIALECT -->`` marker in a page's Markdown."""
    return MARKER.sub(lambda m: prompt_table(m.group(1)), markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: every page goes through :func:`render`; a failure stops the build with its reason."""
    from mkdocs.exceptions import PluginError

    try:
        return render(markdown)
    except (LookupError, ValueError) as exc:
        raise PluginError(f"{__name__}: {exc}") from exc
