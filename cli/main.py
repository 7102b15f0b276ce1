"""``hermes``: the operator's command line (click).

Subcommands live in their own modules and are imported lazily, so ``hermes --help`` stays
fast and an extra that is not installed only breaks the commands that need it.
"""

from __future__ import annotations

import importlib
import sys

import click

from wire import logs

# name -> "module:attribute" of a click command or group.
COMMANDS = {
    "serve": "cli.serve:serve",
    "worker": "cli.serve:worker",
    "demo": "cli.demo:demo",
    "tenants": "cli.tenants:tenants",
    "machines": "cli.machines:machines",
    "attention": "cli.attention:attention",
    "slo": "cli.slo:slo",
    "llm": "cli.llm:llm",
    "operators": "cli.operators:operators",
    "bus": "cli.bus:bus",
    "image": "cli.image:image",
    "drift": "cli.drift:drift",
    "rehearsal": "cli.rehearsal:rehearsal",
    "db": "cli.db:db",
    "backup": "cli.backup:backup",
    "telegram": "cli.telegram:telegram",
    "discord": "cli.discord:discord",
    "settings": "cli.settings:settings",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            missing = exc.name or str(exc)

            @click.command(name=name, help=f"(unavailable: needs {missing})")
            def unavailable():
                raise click.ClickException(
                    f"'hermes {name}' needs {missing}; install the matching extra, "
                    "e.g. pip install 'hermes-max[control,agent,infra]'")

            return unavailable


@click.group(cls=LazyGroup)
def cli():
    """Hermes Max: a personal AI agent on a VM of its own for every paying user."""
    configure_logging()


def configure_logging() -> None:
    """Set up the one log pipeline (``wire.logs``) in HERMES_LOG_FORMAT, on stderr, so command
    output on stdout (a bus URL, a link token) stays clean for scripts.

    Raises:
        click.UsageError: HERMES_LOG_FORMAT is invalid.
    """
    try:
        logs.configure(logs.format_from_env())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli(standalone_mode=True))


if __name__ == "__main__":
    main()
