"""``crcrs view``: a local web viewer of the slides with the model's maps, or a static export."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import cohort_columns, comma_list
from mil_crcrs.explain.settings import HeatmapSettings

_PATH = click.Path(path_type=Path)
_DIR = click.Path(file_okay=False, path_type=Path)


@click.command("view")
@click.option(
    "--slides",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Slide folder (repeat for several); slides are matched to feature files by stem. "
    "Only files inside these folders are ever read (a link out of a folder is skipped).",
)
@click.option("--model", "model_dir", type=_DIR, default=None, help="A trained model directory.")
@click.option(
    "--heatmaps",
    type=_DIR,
    default=None,
    help="Instead of --model: the attention files of `crcrs predict --attention DIR`.",
)
@click.option(
    "--features",
    type=_PATH,
    default=None,
    help="Feature files (needed with --model; with --heatmaps they give the tile size).",
)
@click.option("--clinical", type=_PATH, default=None, help="Cohort table (patients, outcome).")
@click.option(
    "--phenotypes",
    type=_PATH,
    default=None,
    help="Table of tile phenotypes (slide_id, x, y, phenotype; level-0 top-left) for a third "
    "overlay.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback exposes the slides and scores to the "
    "network.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, help="Port [default: a free one]."
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option(
    "--export",
    "export_dir",
    type=_DIR,
    default=None,
    help="Write a static viewer into this folder (opens from file://) instead of serving.",
)
@click.option(
    "--export-slides", default=None, help="Comma-separated slide ids to export [default: all]."
)
@click.option(
    "--export-max-side",
    type=int,
    default=4096,
    show_default=True,
    help="Longest side in pixels of an exported slide's deepest level (the export's size bound).",
)
@click.option(
    "--top-k", type=click.IntRange(min=0), default=8, show_default=True, help="Top tiles shown."
)
@cohort_columns(unit_from_model=True)
def command(
    slides,
    model_dir,
    heatmaps,
    features,
    clinical,
    phenotypes,
    host,
    port,
    open_browser,
    export_dir,
    export_slides,
    export_max_side,
    top_k,
    columns,
    time_unit,
) -> None:
    """Zoom into the slides with the model's attention and contributions over them."""
    from feature_extraction.view.app import is_loopback, serve
    from feature_extraction.view.catalog import open_scores, slides_in
    from feature_extraction.view.phenotypes import read_phenotypes
    from feature_extraction.view.site import Site

    if export_dir is not None:  # before any work: the export may not replace what it reads
        from mil_crcrs.atomic import refuse_overwrite

        inputs = {"--slides": slides, "--model": model_dir, "--heatmaps": heatmaps}
        inputs |= {"--features": features, "--clinical": clinical, "--phenotypes": phenotypes}
        refuse_overwrite({"--export": export_dir}, inputs, folders={"--export"})
    source = open_scores(model_dir, heatmaps, features, clinical, columns, time_unit)
    classes = read_phenotypes(phenotypes) if phenotypes is not None else None
    site = Site(source, slides_in(slides), HeatmapSettings(top_k=top_k), classes)
    if export_dir is not None:
        _export(site, export_dir, export_slides, export_max_side)
        return
    if not is_loopback(host):
        click.echo(
            f"warning: listening on {host}: anyone who can reach this address can see every "
            "slide, score and patient id shown here, without a password",
            err=True,
        )

    def ready(url: str) -> None:
        click.echo(f"crcrs view: {len(site.slides)} slide(s) at {url}  (Ctrl+C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    serve(site, host, port, ready)


def _export(site, export_dir: Path, export_slides: str | None, max_side: int) -> None:
    from cli._options import command_line
    from feature_extraction.view.export import export_site
    from mil_crcrs.atomic import sole_writer
    from mil_crcrs.runlog import RunLog

    chosen = list(comma_list(export_slides)) if export_slides else None
    log_path = export_dir.with_name(f"{export_dir.name}.run.log")
    with sole_writer(export_dir, "view --export"), RunLog(log_path, command_line()) as log:
        result = export_site(site, export_dir, chosen, max_side)
        log.note(f"{len(result.slide_keys)} slide(s), {result.n_files} files")
    click.echo(
        f"{len(result.slide_keys)} slide(s), {result.n_files} files, "
        f"{result.n_bytes / 1e6:.1f} MB: open {result.out_dir / 'index.html'}"
    )
