"""The ``crcrs`` click group.

Subcommands live one per module (``cli/fit.py`` defines ``command``) and are imported only when
called, so ``crcrs fit`` never imports openslide or timm. A user mistake
(:class:`~mil_crcrs.errors.InputError`, or a click usage error) ends in one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings

import click

from cli._options import flag
from mil_crcrs._version import __version__
from mil_crcrs.errors import InputError, SettingError, first_line, os_error_line
from mil_crcrs.runlog import LOGGER, console_handler

COMMANDS = {
    "extract": "Tile slides and cache per-tile features to HDF5.",
    "fit": "Train the attention-MIL survival model (CRCRS).",
    "predict": "Score patients with a trained model.",
    "report": "Survival statistics, nomogram and plots as one HTML report.",
    "heatmap": "Attention and Grad-CAM heatmaps per slide.",
    "phenotypes": "Tile phenotypes: clusters, their risk, galleries and maps.",
    "demo": "Offline end-to-end run on a semi-synthetic cohort of real H&E tissue.",
    "inspect": "What a feature folder or a model directory holds.",
    "view": "A local web viewer of the slides with the model's maps (or a static export).",
    "associate": "CRCRS against mutations, copy number, expression (DE, GSEA), any table.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"cli.{name}").command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingError as exc:  # the library names a setting; the user typed its flag
            click.echo(f"error: {flag(exc.setting)} {exc.problem}", err=True)
            ctx.exit(2)
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:  # disk full, read-only, --out under a file: the user's to fix
            click.echo(f"error: {os_error_line(exc)}", err=True)
            ctx.exit(2)


_shown: set[str] = set()


def first_paragraph(message: object) -> str:
    """A warning's first paragraph as one line: lifelines wraps its sentences over several
    lines, so the first line alone would stop mid-sentence."""
    lines = str(message).strip().splitlines()
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    return " ".join(line.strip() for line in lines[:end]) or first_line(message)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per distinct warning: libraries (lifelines) repeat multi-line advice per fit.
    # Through the log, so that a run.log keeps it too (mil_crcrs.runlog prints "warning: ...").
    text = first_paragraph(message)
    if text not in _shown:
        _shown.add(text)
        logging.getLogger(LOGGER).warning(text)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crcrs")
def cli() -> None:
    """mil-crcrs: a prognostic risk score (CRCRS) from whole-slide images."""
    warnings.showwarning = _show_warning
    console_handler()  # the library's notes and progress lines, one plain line each


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))


if __name__ == "__main__":
    main()
