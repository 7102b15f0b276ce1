"""Settings documentation is generated from the declarations: README's configuration tables,
``hermes settings`` and the classes' docstrings cannot drift from what the code reads."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agent.config import AgentConfig
from cli.main import cli
from cli.settings import BEGIN, END, readme_tables
from control.settings import Settings
from wire.declared import declarations, env_names

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_are_the_generated_ones():
    text = README.read_text()
    assert BEGIN in text and END in text
    inside = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert inside == "\n" + readme_tables(), (
        "README's configuration tables differ from the declarations: run "
        "`hermes settings --readme README.md`")


def test_every_variable_read_has_a_row_with_its_default():
    tables = readme_tables()
    for cls in (Settings, AgentConfig):
        for names in env_names(cls).values():
            assert all(f"`{name}`" in tables for name in names)
    assert "| `HERMES_PORT` | `8000` | HTTP port of `hermes serve` |" in tables
    assert "| `HERMES_TENANT` | required |" in tables


def test_cli_prints_the_tables_and_rewrites_a_readme(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(cli, ["settings", "--markdown"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == readme_tables()

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{BEGIN}\nstale table\n{END}\n\nafter\n")
    rewritten = runner.invoke(cli, ["settings", "--readme", str(readme)])
    assert rewritten.exit_code == 0, rewritten.output
    assert readme.read_text() == f"# Title\n\n{BEGIN}\n{readme_tables()}{END}\n\nafter\n"


def test_help_lists_every_setting_with_its_variable_and_default():
    for cls in (Settings, AgentConfig):
        for name, decl in declarations(cls).items():
            assert f"    {name}: " in cls.__doc__
            for variable in decl.env:
                assert variable in cls.__doc__
    assert "port: [HERMES_PORT] = `8000`; HTTP port" in Settings.__doc__
    assert "huey_immediate: (constructor only) = `false`" in Settings.__doc__
