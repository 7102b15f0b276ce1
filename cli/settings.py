"""``hermes settings``: every environment variable of the control plane and the agent, generated
from their declarations (``control/settings.py``, ``agent/config.py``, ``wire/declared.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from agent.config import AgentConfig
from control.settings import Settings
from wire.declared import markdown_table, replace_between

#: The README lines around the generated tables; tests/control/test_settings_docs.py checks
#: that README.md holds exactly what ``readme_tables()`` generates between them.
BEGIN = "<!-- settings:begin (generated: hermes settings --readme README.md) -->"
END = "<!-- settings:end -->"


def readme_tables() -> str:
    """The Markdown of README's configuration tables: control plane, then agent."""
    return ("Control plane (`control/settings.py`):\n\n" + markdown_table(Settings)
            + "\nAgent (`agent/config.py`; the control plane hands the LLM variables, "
              "`HERMES_LOG_FORMAT` and `SENTRY_DSN` to the agents it starts):\n\n"
            + markdown_table(AgentConfig))


@click.command()
@click.option("--markdown", is_flag=True, help="Print README's configuration tables.")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Rewrite the tables between the markers of this README in place.")
def settings(markdown: bool, readme: Path | None):
    """List every setting: variables, default and meaning (the classes' generated docs)."""
    if readme is not None:
        text = readme.read_text()
        readme.write_text(replace_between(text, BEGIN, END, readme_tables()))
        click.echo(f"{readme}: configuration tables regenerated")
    elif markdown:
        click.echo(readme_tables(), nl=False)
    else:
        click.echo(Settings.__doc__)
        click.echo(AgentConfig.__doc__, nl=False)
