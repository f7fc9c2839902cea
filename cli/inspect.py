"""``crcrs inspect``: what a feature folder or a model directory holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli._options import read_settings


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@read_settings
def command(path, as_json, read_settings) -> None:
    """Describe PATH: a feature folder (layout, tool, encoder, tiles, coordinates, hash) or a
    model directory (what it was trained on and how it scored)."""
    from mil_crcrs.inspection import inspect_path, summary_lines

    info = inspect_path(path, read_settings)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for line in summary_lines(info):
            click.echo(line)
