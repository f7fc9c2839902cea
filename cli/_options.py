"""Option decorators shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from mil_crcrs.cohort import TIME_UNITS, Columns


def cohort_columns(func: Callable) -> Callable:
    """Add ``--patient-col/--slide-col/--time-col/--event-col/--time-unit``.

    The command receives ``columns`` (a :class:`~mil_crcrs.cohort.Columns`) and ``time_unit``.
    """
    options = [
        click.option(
            "--patient-col",
            default="patient_id",
            show_default=True,
            help="Column with the patient id.",
        ),
        click.option(
            "--slide-col",
            default="slide_id",
            show_default=True,
            help="Column with the slide id (feature-file stem); absent = one slide per patient.",
        ),
        click.option(
            "--time-col", default="time", show_default=True, help="Column with the follow-up time."
        ),
        click.option(
            "--event-col",
            default="event",
            show_default=True,
            help="Column with the event indicator: 1 = event observed, 0 = censored.",
        ),
        click.option(
            "--time-unit",
            type=click.Choice(TIME_UNITS),
            default="days",
            show_default=True,
            help="Unit of the time column.",
        ),
    ]

    # functools.wraps carries the options already applied beneath this decorator.
    @functools.wraps(func)
    def wrapper(*args, patient_col, slide_col, time_col, event_col, **kwargs):
        kwargs["columns"] = Columns(patient_col, slide_col, time_col, event_col)
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to run: auto picks cuda when available.",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")

features_option = click.option(
    "--features",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of feature files (.h5/.pt; CLAM and TRIDENT files too).",
)
missing_option = click.option(
    "--missing",
    type=click.Choice(["error", "warn"]),
    default="error",
    show_default=True,
    help="Slides without a feature file: stop, or drop with a warning.",
)
model_dir_option = click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Model directory written by crcrs fit.",
)


def comma_list(text: str | None) -> tuple[str, ...]:
    """Split a comma-separated option value, dropping blanks ("a, b," -> ("a", "b"))."""
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())
