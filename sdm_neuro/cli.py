"""The ``sdm-neuro`` command line. Subcommands live in ``sdm_neuro.commands`` (one module each)
and import their heavy dependencies lazily, so ``sdm-neuro --help`` stays fast."""
from __future__ import annotations

import importlib
import sys

import click

from .commands import COMMANDS
from .errors import SdmError


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f".commands.{name.replace('-', '_')}", __package__).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sdm-neuro")
def cli() -> None:
    """Spiking diffusion models: train, sample, evaluate, export to Lava, simulate, energy reports."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; Ctrl-C exits 130."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except SdmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
