"""Option decorators shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from mil_crcrs.data.cohort import DEFAULT_TIME_UNIT, MISSING_POLICIES, TIME_UNITS, DataWarning
from mil_crcrs.data.store import ReadSettings
from mil_crcrs.data.tables import Columns
from mil_crcrs.errors import SettingError


def cohort_columns(func: Callable | None = None, *, unit_from_model: bool = False) -> Callable:
    """Add ``--patient-col/--slide-col/--time-col/--event-col/--censor-col/--time-unit``.

    The command receives ``columns`` (a :class:`~mil_crcrs.data.tables.Columns`) and ``time_unit``.
    With ``unit_from_model`` (commands that load a model: ``@cohort_columns(unit_from_model=True)``)
    ``--time-unit`` defaults to None, which the command reads as the unit the model was fitted in.
    """
    if func is None:
        return functools.partial(cohort_columns, unit_from_model=unit_from_model)
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
            "--censor-col",
            default=None,
            help="Column with a censoring indicator instead (1 = censored, CLAM's "
            "'censorship'), inverted into the event [default: 'censorship' when the table has "
            "no event column].",
        ),
        click.option(
            "--time-unit",
            type=click.Choice(TIME_UNITS),
            default=None,
            help="Unit of the time column [default: what its name says (survival_months, "
            "OS_days, *_years), else "
            + ("the unit the model was fitted in]." if unit_from_model else "days]."),
        ),
    ]

    # functools.wraps carries the options already applied beneath this decorator.
    @functools.wraps(func)
    def wrapper(*args, patient_col, slide_col, time_col, event_col, censor_col, **kwargs):
        kwargs["columns"] = Columns(patient_col, slide_col, time_col, event_col, censor_col)
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def time_unit_for(
    given: str | None, time_col: str, fallback: str = DEFAULT_TIME_UNIT, why: str = ""
) -> tuple[str, str]:
    """The unit of a table's times and where it comes from, for the log: ``--time-unit``, else
    what the time column's name says, else ``fallback`` (``why``: where that comes from)."""
    from mil_crcrs.data.tables import time_unit_from_name

    named = time_unit_from_name(time_col)
    if given:
        if named and named != given:
            warnings.warn(
                f"the time column '{time_col}' is named like {named} but --time-unit says "
                f"{given}; times read in {given}",
                DataWarning,
                stacklevel=2,
            )
        return given, "--time-unit"
    if named:
        return named, f"from the column name '{time_col}'; --time-unit to say otherwise"
    return fallback, why or (
        f"the default: the column name '{time_col}' names no unit; --time-unit to say another"
    )


def flag(setting: str) -> str:
    """The command-line flag of a setting: ``batch_size`` -> ``--batch-size``."""
    return "--" + setting.replace("_", "-")


class DeviceType(click.ParamType):
    """A device name, checked by the library (:func:`mil_crcrs.device.check_device`): one of
    ``mil_crcrs.device.DEVICES`` or ``cuda:N``. Imports torch only when used."""

    name = "device"

    def get_metavar(self, param, ctx=None):
        from mil_crcrs.device import DEVICES

        return "[" + "|".join((*DEVICES, "cuda:N")) + "]"

    def convert(self, value, param, ctx):
        from mil_crcrs.device import check_device
        from mil_crcrs.errors import SettingError

        try:
            check_device(value)
        except SettingError as exc:
            self.fail(exc.problem, param, ctx)
        return value


device_option = click.option(
    "--device",
    type=DeviceType(),
    default="auto",
    show_default=True,
    help="Where to run: auto picks cuda when available.",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")

features_option = click.option(
    "--features",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of feature files (.h5/.pt; CLAM, TRIDENT, STAMP and slideflow files too).",
)
slide_table_option = click.option(
    "--slide-table",
    type=click.Path(path_type=Path),
    default=None,
    help="Separate table of (patient, slide) rows joined to a one-row-per-patient clinical "
    "table, as STAMP keeps them (e.g. --patient-col PATIENT --slide-col FILENAME).",
)
progress_option = click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show progress: bars on a terminal, one plain line per step (with the time left) "
    "when stderr is a file; --no-progress prints results and warnings only.",
)


def command_line() -> str:
    """The running command and its parameters, for a run.log."""
    ctx = click.get_current_context()

    def shown(value: object) -> str:  # a repeated option as a,b rather than a tuple's repr
        return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)

    given = {k: v for k, v in ctx.params.items() if v is not None and v != ()}
    return f"{ctx.command_path} {' '.join(f'{k}={shown(v)}' for k, v in given.items())}".strip()


def read_settings(func: Callable) -> Callable:
    """Add ``--encoder/--tile-size/--slide-mpp``: what feature files may not record.

    The command receives ``read_settings`` (a :class:`~mil_crcrs.data.store.ReadSettings`).
    """
    options = [
        click.option(
            "--encoder",
            default=ReadSettings.encoder,
            help="Encoder that made the features, for files that do not name it (CLAM, "
            "slideflow); a file that names another is an error.",
        ),
        click.option(
            "--tile-size",
            type=int,
            default=ReadSettings.tile_size_level0,
            help="Tile edge in level-0 pixels, for files that do not record it.",
        ),
        click.option(
            "--slide-mpp",
            type=float,
            default=ReadSettings.slide_mpp,
            help="Slides' level-0 microns per pixel, to place coordinates stored in microns "
            "(STAMP).",
        ),
    ]

    @functools.wraps(func)
    def wrapper(*args, encoder, tile_size, slide_mpp, **kwargs):
        try:
            kwargs["read_settings"] = ReadSettings(encoder, tile_size, slide_mpp)
        except SettingError as exc:  # the setting is tile_size_level0, its flag --tile-size
            setting = "tile_size" if exc.setting == "tile_size_level0" else exc.setting
            raise SettingError(setting, exc.problem) from None
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


missing_option = click.option(
    "--missing",
    type=click.Choice(MISSING_POLICIES),
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
