"""The docs site says what the code does: its route table, settings, catalogue fields, command lines,
make targets and benchmark tables are checked against (or generated from) the code and bench/results."""

from __future__ import annotations

import json
import re
import shlex
import typing
from pathlib import Path

import pytest
from helpers.docs import DOCS, hook, makefile_targets, normalize, openapi_routes, pages
from helpers.server import ROOT
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from embedserve.catalog import AutoscalingSpec, BatchingSpec, ModelSpec, RaySpec
from embedserve.cli import _parser, _settings
from embedserve.settings import Settings

# served by FastAPI outside the schema, or left out of it on purpose (the playground's static page)
NOT_IN_SCHEMA = {("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/playground")}
# EMBEDSERVE_* variables the docs name that are not server settings, and who reads them
NOT_SETTINGS = {
    "EMBEDSERVE_API_KEY": "clients: embedserve eval and the playground's snippets",
    "EMBEDSERVE_SOAK_SECONDS": "tests/robustness/test_soak.py",
}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading``."""
    section = text[text.index(heading) :].splitlines()
    rows: list[list[str]] = []
    for line in section if heading.startswith("|") else section[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"no table after {heading!r}"
    return rows[2:]  # past the header and its rule


def test_route_table_matches_openapi() -> None:
    table = _table_after(_text(DOCS / "api" / "index.md"), "## Routes")
    documented = {
        (m, normalize(p)) for row in table for m, p in re.findall(r"`(GET|POST|PUT|DELETE) (/[^`]*)`", row[0])
    } - NOT_IN_SCHEMA
    schema = openapi_routes()
    assert sorted(schema - documented) == [], "in /openapi.json but not in docs/api/index.md's route table"
    assert sorted(documented - schema) == [], "in docs/api/index.md's route table but not in /openapi.json"


def test_every_variable_named_in_the_docs_is_a_setting() -> None:
    settings = {f"EMBEDSERVE_{name.upper()}" for name in Settings.model_fields}
    for page in [*pages(), ROOT / "README.md"]:
        named = set(re.findall(r"\bEMBEDSERVE_[A-Z_]*[A-Z]\b", _text(page)))
        unknown = named - settings - set(NOT_SETTINGS)
        assert unknown == set(), f"{page.relative_to(ROOT)} names variables the server does not read"


def test_every_make_target_named_in_the_docs_exists() -> None:
    targets = makefile_targets()
    for page in [*pages(), ROOT / "README.md"]:
        named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", _text(page)))
        assert named - targets == set(), f"{page.relative_to(ROOT)} names make targets the Makefile lacks"


def _command_lines() -> list[tuple[str, str]]:
    """Every ``embedserve ...`` line of the docs' code blocks, without variables, comments, redirects or ``&``."""
    lines = []
    for page in [*pages(), ROOT / "README.md"]:
        in_block = False
        for line in _text(page).splitlines():
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            line = line.split(" #")[0].split(" > ")[0].strip().removesuffix("&").strip()
            line = re.sub(r"^(?:[A-Z_]+=\S+ )+", "", line)  # VAR=value before the command
            if in_block and line.startswith("embedserve "):
                lines.append((page.name, line))
    return lines


def test_every_command_line_in_the_docs_parses() -> None:
    lines = _command_lines()
    assert {line.split()[1] for _, line in lines} >= {"serve", "eval", "ray-config"}
    for page, line in lines:
        try:
            _parser().parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{page}: `{line}` does not parse")


def test_catalogue_tables_list_every_field() -> None:
    text = _text(DOCS / "catalogue.md")
    fields = {row[0].strip("`") for row in _table_after(text, "## Fields")}
    assert fields == set(ModelSpec.model_fields), "docs/catalogue.md's field table and ModelSpec differ"
    batching = {row[0].strip("`") for row in _table_after(_text(DOCS / "engines.md"), "| `batching:` key")}
    assert batching == set(BatchingSpec.model_fields), "docs/engines.md's batching table and BatchingSpec differ"
    ray_text = _text(DOCS / "scaling.md")
    ray = {row[0].strip("`") for row in _table_after(ray_text, "| `ray:` key")}
    assert ray == set(RaySpec.model_fields), "docs/scaling.md's ray table and RaySpec differ"
    assert all(f"`{name}`" in ray_text for name in AutoscalingSpec.model_fields)


# ---- the settings page, generated from Settings -------------------------------------------------


def test_settings_table_covers_every_field_with_its_description() -> None:
    settings_table = hook("settings_table")
    rows = settings_table.settings_rows()
    assert [row["name"] for row in rows] == list(Settings.model_fields)
    for row in rows:
        field = Settings.model_fields[row["name"]]
        assert field.description and field.description.strip(), f"Settings.{row['name']} has no description"
        assert row["description"] == " ".join(field.description.split())
        assert row["env"] == f"EMBEDSERVE_{row['name'].upper()}"
    table = settings_table.render("before\n<!-- settings-table -->\nafter")
    assert "<!-- settings-table -->" not in table
    for name in Settings.model_fields:
        assert f"| `EMBEDSERVE_{name.upper()}` |" in table
    assert "| `EMBEDSERVE_PORT` | `--port` | integer (≥ 0, ≤ 65535) | `7860` |" in table


def test_a_setting_without_a_description_stops_the_build() -> None:
    class Undocumented(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="EMBEDSERVE_")
        documented: int = Field(default=1, description="has one")
        bare: int = 2

    with pytest.raises(ValueError, match=r"Settings\.bare has no description"):
        hook("settings_table").settings_rows(Undocumented)


def test_the_settings_page_uses_the_generator() -> None:
    assert "<!-- settings-table -->" in _text(DOCS / "settings.md")
    assert "<!-- cli-help: serve -->" in _text(DOCS / "settings.md")


def _sample(name: str) -> str:
    """A value for setting ``name`` that is not its default, as a flag would be given it."""
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True, validated_data={})
    annotation = field.annotation
    choices = [c for c in typing.get_args(annotation) if isinstance(c, str)]
    if typing.get_origin(annotation) is typing.Literal:
        return next(c for c in choices if c != default)
    if default is None or isinstance(default, (Path, str)) or name.endswith(("_dir", "_file")):
        return {"host": "0.0.0.0", "port": "8001"}.get(name, "/tmp/embedserve-flag-test")
    if isinstance(default, list):
        return "http://a,http://b"
    if isinstance(default, (int, float)):
        return str(default + 1)
    raise AssertionError(f"no sample value for setting {name}: add one here")


def test_every_serve_flag_reaches_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's help says each flag sets a setting: parse each one and check that it does."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"EMBEDSERVE_{name.upper()}", raising=False)
    actions = {a.dest: a for a in hook("settings_table")._subparser("serve")._actions if a.option_strings}
    flagged = [name for name in actions if name in Settings.model_fields]
    assert set(flagged) >= {"config", "host", "port", "lazy", "playground", "cache_dir", "api_keys_file"}
    for name in flagged:
        if name == "api_keys_file":
            continue  # read at once, so it needs a real file: tests/unit/test_settings_production.py
        action = actions[name]
        argv = ["serve", action.option_strings[-1]] if action.nargs == 0 else ["serve", action.option_strings[0]]
        argv += [] if action.nargs == 0 else [_sample(name)]
        got = getattr(_settings(_parser().parse_args(argv)), name)
        default = Settings.model_fields[name].get_default(call_default_factory=True, validated_data={})
        assert got != default, f"{argv} did not set {name}"


def test_serve_help_names_every_setting() -> None:
    help_text = " ".join(hook("settings_table").cli_help("serve").split())
    for name in Settings.model_fields:
        assert f"EMBEDSERVE_{name.upper()}" in help_text, f"`embedserve serve --help` never names {name}"
    assert "$XDG_CACHE_HOME/embedserve" in help_text


# ---- the performance tables, generated from bench/results/*.json --------------------------------


def _scaled(value: object) -> object:
    """Every number times 3 and every boolean flipped, so a table built from the file must change."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 3
    if isinstance(value, dict):
        return {k: _scaled(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scaled(v) for v in value]
    return value


def test_benchmark_tables_come_from_the_results_files(tmp_path: Path) -> None:
    bench = hook("bench_tables")
    for path in (ROOT / "bench" / "results").glob("*.json"):
        (tmp_path / path.name).write_text(json.dumps(_scaled(json.loads(path.read_text()))))
    for name, make in bench.TABLES.items():
        original, changed = make(bench.RESULTS), make(tmp_path)
        assert original.startswith("| ") and original != changed, f"table {name} does not follow its JSON"
    rows = json.loads((ROOT / "bench" / "results" / "batching.json").read_text())["rows"]
    table = bench.render("<!-- bench: batching -->")
    for row in rows:
        assert f"{row['items_per_second']:,.1f} ({row['ratio_to_ceiling']:.2f}" in table


def test_performance_pages_type_no_figures_by_hand() -> None:
    bench = hook("bench_tables")
    used: set[str] = set()
    for page in pages():
        used |= set(bench.MARKER.findall(_text(page)))
    assert used <= set(bench.TABLES), "a page uses a table the hook does not make"
    assert set(bench.TABLES) <= used, "the hook makes a table no page uses"
    for page in ("performance.md",):
        typed = [line for line in _text(DOCS / page).splitlines() if line.startswith("|")]
        assert typed == [], f"docs/{page} has a hand-typed table: use a <!-- bench: NAME --> marker"


def test_an_unknown_table_stops_the_build() -> None:
    with pytest.raises(KeyError, match="unknown benchmark table"):
        hook("bench_tables").render("<!-- bench: no-such-table -->")


# ---- the prompt tables, generated from the dialects' code --------------------------------------


def test_prompt_tables_follow_the_code() -> None:
    from embedserve.api.cohere import INPUT_TYPE_PROMPTS
    from embedserve.api.openai import JINA_TASK_PROMPTS

    prompts = hook("prompt_tables")
    for dialect, mapping, page in (
        ("jina", JINA_TASK_PROMPTS, "jina.md"),
        ("cohere", INPUT_TYPE_PROMPTS, "cohere.md"),
    ):
        assert f"<!-- prompts: {dialect} -->" in _text(DOCS / "api" / page)
        table = prompts.render(f"<!-- prompts: {dialect} -->")
        for value, names in mapping.items():
            assert f"| `{value}` | {', '.join(f'`{n}`' for n in names)} |" in table
    with pytest.raises(LookupError):
        prompts.render("<!-- prompts: nobody -->")
