"""``crcrs associate``: what goes with a high CRCRS in mutations, expression, gene sets and any
per-patient table (the library's :func:`mil_crcrs.omics.associate`)."""

from __future__ import annotations

from pathlib import Path

import click

from cli._options import comma_list, command_line, progress_option, seed_option
from mil_crcrs.omics.mutations import NON_SILENT
from mil_crcrs.omics.run import AssociateSettings

_FILE = click.Path(dir_okay=False, path_type=Path)
_DEFAULTS = AssociateSettings()


@click.command("associate")
@click.option(
    "--scores",
    required=True,
    type=click.Path(path_type=Path),
    help="predictions.csv from crcrs predict, or a model directory (its out-of-fold CRCRS); "
    "risk_group (the model's own cutoff) splits high vs low.",
)
@click.option(
    "--mutations", type=_FILE, help="MAF (cBioPortal or GDC), or a patient x gene 0/1 table."
)
@click.option(
    "--expression",
    type=_FILE,
    help="Genes x samples (or samples x genes) matrix: counts, TPM, RSEM or log values.",
)
@click.option(
    "--cna", type=_FILE, help="Discrete copy number, GISTIC -2..2 (cBioPortal data_cna.txt)."
)
@click.option(
    "--gene-sets", type=_FILE, help="GMT file of gene sets for GSEA (needs --expression)."
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    type=_FILE,
    help="Per-patient table (immune fractions, signature scores, subtypes ...); repeat for several.",
)
@click.option(
    "--cbioportal",
    type=click.Path(file_okay=False, path_type=Path),
    help="cBioPortal study folder: its mutation, CNA and expression files, and its sample table.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: one CSV per analysis, figures/, associate.json, run.log.",
)
@click.option(
    "--variant-classes",
    default=",".join(NON_SILENT),
    show_default=True,
    help="MAF Variant_Classification values counted as a mutation (comma-separated).",
)
@click.option("--min-mutated", type=int, default=_DEFAULTS.min_mutated, show_default=True,
              help="Genes mutated in fewer patients are not tested.")  # fmt: skip
@click.option(
    "--de-method",
    type=click.Choice(["auto", "deseq2", "rank"]),
    default=_DEFAULTS.de_method,
    show_default=True,
    help="auto: PyDESeq2 for raw counts, else a Mann-Whitney test on log values.",
)
@click.option("--permutations", type=int, default=_DEFAULTS.permutations, show_default=True,
              help="GSEA permutations.")  # fmt: skip
@click.option("--min-set-size", type=int, default=_DEFAULTS.min_set_size, show_default=True,
              help="Smallest gene set tested (genes in the matrix).")  # fmt: skip
@click.option("--max-set-size", type=int, default=_DEFAULTS.max_set_size, show_default=True,
              help="Largest gene set tested.")  # fmt: skip
@click.option("--fdr", type=float, default=_DEFAULTS.fdr, show_default=True,
              help="FDR under which a finding counts as significant in figures and summary.")  # fmt: skip
@click.option("--threads", type=int, default=_DEFAULTS.threads, show_default=True,
              help="GSEA threads.")  # fmt: skip
@seed_option
@progress_option
def command(scores, mutations, expression, cna, gene_sets, tables, cbioportal, out, variant_classes,
            min_mutated, de_method, permutations, min_set_size, max_set_size, fdr, threads, seed,
            progress) -> None:  # fmt: skip
    """Test the CRCRS against mutations, copy number, expression (DE + GSEA) and per-patient
    tables."""
    from mil_crcrs.atomic import refuse_overwrite, sole_writer
    from mil_crcrs.omics.run import associate
    from mil_crcrs.runlog import RUN_LOG_NAME, RunLog

    settings = AssociateSettings(
        variant_classes=comma_list(variant_classes),
        min_mutated=min_mutated,
        de_method=de_method,
        permutations=permutations,
        min_set_size=min_set_size,
        max_set_size=max_set_size,
        fdr=fdr,
        seed=seed,
        threads=threads,
    )
    given = {"--scores": scores, "--mutations": mutations, "--expression": expression,
             "--cna": cna, "--gene-sets": gene_sets, "--table": tables, "--cbioportal": cbioportal}  # fmt: skip
    refuse_overwrite({"--out": out}, given, folders={"--out"})
    with (
        sole_writer(out, "associate"),
        RunLog(out / RUN_LOG_NAME, command_line(), progress) as run_log,
    ):
        result = associate(scores, out, mutations, expression, gene_sets, tables, cbioportal,
                           settings, cna)  # fmt: skip
        for name, table in result.tables.items():
            q = _fdr_column(table)
            n_hits = int((table[q] < fdr).sum()) if q else 0
            line = (
                f"{name}: {len(table)} tests on {result.n_patients.get(name, 0)} patients, "
                f"{n_hits} at FDR < {fdr:g}: {out / (name + '.csv')}"
            )
            click.echo(line)
            run_log.note(line)


def _fdr_column(table) -> str | None:
    return next((c for c in ("fdr_fisher", "fdr") if c in table.columns), None)
