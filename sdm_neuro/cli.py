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


def _end_progress_bars() -> None:
    """Close open progress bars, so that a message starts on a line of its own, not on a bar's."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a broken bar must not hide the real error
            pass


def _fail(message: str, code: int = 2) -> None:
    _end_progress_bars()
    click.echo(message, err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; Ctrl-C exits 130."""
    try:
        cli.main(args=argv, prog_name="sdm-neuro", standalone_mode=False)
    except SdmError as exc:
        _fail(f"error: {exc}")
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except OSError as exc:  # a file system failure no earlier check caught (disk full, vanished folder)
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _fail(f"error: {exc.strerror or exc}{where}")
    except MemoryError:
        _fail("error: out of memory (lower the batch size, --n, model.T or image_size)")
    except click.ClickException as exc:  # a usage error (unknown option, bad value...): one line too
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if isinstance(exc, click.UsageError) and ctx else ""
        _fail("error: " + " ".join(exc.format_message().split()) + hint)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
