"""``crcrs fit``: cross-validated training of the CRCRS model into a model directory.

Every :class:`~mil_crcrs.train.settings.FitSettings` field is a flag (``batch_size`` -> ``--batch-size``),
built here from the dataclass itself: its defaults, its docstring for the help, and the library's
name tuples for the choices. The aggregator's own hyperparameters (``model_kwargs``) are flags
too, one per option any registered model takes (``--hidden-dim``, ``--attn-dim``, ``--dropout``,
``--heads`` ...). ``--config FILE`` reads the same fields from TOML, YAML or JSON, or from a model
directory's ``config.json`` to repeat a run; flags given on the command line override the file.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import click

from cli._options import (
    DeviceType,
    cohort_columns,
    comma_list,
    command_line,
    features_option,
    flag,
    missing_option,
    read_settings,
    slide_table_option,
    time_unit_for,
)
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.models import list_models, model_options
from mil_crcrs.train.config import read_settings_file
from mil_crcrs.train.settings import (
    FitSettings,
    setting_choices,
    setting_default,
    setting_docs,
    setting_fields,
    setting_types,
)

_PATH = click.Path(path_type=Path)


class _MaxTiles(click.ParamType):
    name = "INTEGER|all"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value is None:
            return value
        if str(value).lower() in ("all", "none"):
            return "all"
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'all'", param, ctx)


class _Seeds(click.ParamType):
    name = "INT,INT,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(s) for s in comma_list(value))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)


def _setting_option(name: str, kind: Any, help_text: str) -> Any:
    """The click option of FitSettings field ``name`` (default None: 'not given')."""
    default = setting_default(name)
    shown = "all" if name == "max_tiles" and default is None else default
    if isinstance(shown, tuple):
        shown = ",".join(map(str, shown)) or "the one --seed"
    help_text = f"{help_text} [default: {shown}]"
    if kind is bool:
        off = "--no-" + flag(name)[2:]
        return click.option(f"{flag(name)}/{off}", name, default=None, help=help_text)
    choices = setting_choices()
    if name in choices:
        kind = click.Choice(list(choices[name]))
    elif name == "device":
        kind = DeviceType()
    elif name == "max_tiles":
        kind = _MaxTiles()
    elif name == "seeds":
        kind = _Seeds()
    elif typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: an X, or unset
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return click.option(flag(name), name, type=kind, default=None, help=help_text)


def _model_option_flags() -> dict[str, tuple[type, str]]:
    """Every hyperparameter a registered model takes: its type and a help line."""
    found: dict[str, dict[str, Any]] = {}
    for model in list_models():
        for key, default in model_options(model).items():
            found.setdefault(key, {})[model] = default
    flags = {}
    for key, defaults in found.items():
        kind = float if any(isinstance(v, float) for v in defaults.values()) else int
        said = ", ".join(f"{m} {v}" for m, v in defaults.items())
        flags[key] = (
            kind,
            f"Model option (model_kwargs) of {', '.join(defaults)} [default: {said}].",
        )
    return flags


def settings_options(func):
    """Add one flag per FitSettings field and per model option."""
    docs, kinds = setting_docs(), setting_types()
    options = []
    for name in setting_fields():
        if name == "model_kwargs":
            for key, (kind, text) in _model_option_flags().items():
                options.append(click.option(flag(key), f"model_kwarg_{key}", type=kind, help=text))
            continue
        text = re.sub(r":\w+:`~?([\w.]+)`", r"\1", docs.get(name, name).replace("``", ""))
        options.append(_setting_option(name, kinds[name], text[:1].upper() + text[1:] + "."))
    for option in reversed(options):
        func = option(func)
    return func


@click.command("fit")
@features_option
@click.option(
    "--clinical",
    required=True,
    type=_PATH,
    help="Cohort table (CSV or .xlsx): one row per slide with patient, slide, time and event "
    "(or CLAM's censorship).",
)
@slide_table_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to write.",
)
@click.option(
    "--config",
    "config",
    type=_PATH,
    default=None,
    help="Settings file (TOML, YAML or JSON with FitSettings fields), or a model directory "
    "(or its config.json) to repeat its run; flags given here override it.",
)
@missing_option
@click.option(
    "--val-clinical",
    type=_PATH,
    default=None,
    help="External validation cohort table, scored once and reported separately.",
)
@click.option(
    "--val-features",
    type=_PATH,
    default=None,
    help="Feature files of the validation cohort [default: --features].",
)
@click.option(
    "--resume/--no-resume",
    default=False,
    show_default=True,
    help="Take the fold models that an interrupted fit with the same settings, cohort and "
    "features saved (in .OUT.checkpoints beside --out), and train only the rest.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the model directory --out if one is already there.",
)
@settings_options
@read_settings
@cohort_columns
def command(
    features,
    clinical,
    slide_table,
    out,
    config,
    missing,
    val_clinical,
    val_features,
    resume,
    overwrite,
    read_settings,
    columns,
    time_unit,
    **given,
) -> None:
    """Train K fold models; write weights, config, metrics.json, oof_predictions.csv, run.log."""
    from mil_crcrs.atomic import refuse_overwrite, sole_writer
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.data.store import FeatureStore
    from mil_crcrs.fitting import fit
    from mil_crcrs.runlog import RUN_LOG_NAME, RunLog
    from mil_crcrs.train.checkpoints import (
        checkpoint_folder,
        drop_unused_checkpoints,
        remove_checkpoints,
    )

    refuse_overwrite(
        {"--out": out},
        {
            "--features": features,
            "--clinical": clinical,
            "--slide-table": slide_table,
            "--config": config,
            "--val-clinical": val_clinical,
            "--val-features": val_features,
        },
        folders={"--out"},
    )
    settings = build_settings(config, given)
    if (out / "config.json").exists() and not (overwrite or resume):
        raise InputError(
            f"{out}: a model directory is already there; --overwrite to replace it, or another "
            "--out"
        )
    with (
        sole_writer(out, "fit"),
        RunLog(out / RUN_LOG_NAME, command_line(), progress=settings.progress) as run_log,
    ):
        time_unit, source = time_unit_for(time_unit, columns.time)
        run_log.note(f"times of {clinical.name} read in {time_unit} ({source})")
        cohort = read_cohort(clinical, columns, time_unit, slide_table=slide_table)
        try:
            crcrs = fit(
                FeatureStore(features, settings=read_settings),
                cohort,
                settings,
                columns=columns,
                time_unit=time_unit,
                missing=missing,
                val_clinical=val_clinical,
                val_features=val_features and FeatureStore(val_features, settings=read_settings),
                checkpoints=checkpoint_folder(out),
                resume=resume,
            )
        except SettingError as exc:  # e.g. folds too many for the cohort's events
            drop_unused_checkpoints(checkpoint_folder(out))
            raise InputError(f"{_where(exc.setting, config, given)} {exc.problem}") from None
        except InputError:
            drop_unused_checkpoints(checkpoint_folder(out))
            raise
        crcrs.save(out)
        remove_checkpoints(checkpoint_folder(out))
        for line in _summary(crcrs):
            click.echo(line)
            run_log.note(line)
    click.echo(f"model: {out}")


def build_settings(config: Path | None, given: dict[str, Any]) -> FitSettings:
    """FitSettings from the defaults, then ``config`` (a file), then the flags given.

    Raises
    ------
    InputError
        naming the flag, or the file and setting, of a bad value
    """
    values = read_settings_file(config) if config is not None else {}
    model_kwargs = dict(values.get("model_kwargs", {}))
    for key, value in given.items():
        if value is None:
            continue
        if key.startswith("model_kwarg_"):
            model_kwargs[key.removeprefix("model_kwarg_")] = value
        else:
            values[key] = None if (key == "max_tiles" and value == "all") else value
    values["model_kwargs"] = model_kwargs
    try:
        return FitSettings(**values)
    except SettingError as exc:
        raise InputError(f"{_where(exc.setting, config, given)} {exc.problem}") from None


def _where(setting: str, config: Path | None, given: dict[str, Any]) -> str:
    """How the user set ``setting``: the flag given, else the settings file, else its flag."""
    flags: dict[str, str] = {}  # setting -> the flag it came from
    for key, value in given.items():
        if value is not None and key.startswith("model_kwarg_"):
            flags.setdefault("model_kwargs", flag(key.removeprefix("model_kwarg_")))
        elif value is not None:
            flags[key] = flag(key)
    if setting in flags:
        return flags[setting]
    if config is not None and setting in read_settings_file(config):
        return f"{config}: {setting}"
    return flag(setting)


def _summary(crcrs: Any) -> list[str]:
    m = crcrs.metrics
    seeds = m.get("seeds", [])
    per_fold = "  ".join(f"{c:.3f}" for c in m["harrell_c_per_fold"])
    over = f"{len(m['harrell_c_per_fold'])} folds"
    if len(seeds) > 1:
        over = f"{len(seeds)} seeds x {len(m['harrell_c_per_fold']) // len(seeds)} folds"
    lines = [
        f"Harrell C per fold: {per_fold}",
        f"Harrell C: {m['harrell_c_mean']:.3f} +- {m['harrell_c_sd']:.3f} (mean +- sd over "
        f"{over}); pooled out-of-fold: {m['harrell_c_oof']:.3f} "
        f"({m['n_patients']} patients, {m['n_events']} events)",
    ]
    if len(seeds) > 1:
        per_seed = "  ".join(f"{c:.3f}" for c in m["harrell_c_oof_per_seed"])
        lines.append(f"pooled out-of-fold C per seed ({json.dumps(seeds)}): {per_seed}")
    rule = crcrs.cutoff_rule
    lines.append(
        f"cutoff ({rule.method} of the out-of-fold CRCRS): {rule.value:.4g} "
        f"({rule.n_high} high, {rule.n_low} low)"
    )
    if "validation" in m:
        v = m["validation"]
        lines.append(
            f"validation {v['source']}: Harrell C {v['harrell_c']:.3f} "
            f"({v['n_patients']} patients, {v['n_events']} events, {v['n_high']} high)"
        )
    return lines
