"""``associate``: what goes with a high CRCRS, in mutations, copy number, expression, gene sets
and any per-patient table; one CSV per analysis, the figures and a summary.

Outputs in ``out_dir`` (written as one folder, atomically):

- ``mutations.csv`` (:mod:`.mutations`), ``cna.csv`` (:mod:`.cna`), ``expression.csv``
  (:mod:`.expression`),
  ``gene_sets.csv`` (:mod:`.gsea`), ``patient_tables.csv`` (:mod:`.tables`): every test with
  its effect, CI where there is one, p, FDR, n, the test's name and its multiple-testing family;
- ``figures/``: ``oncoprint.png``, ``volcano.png``, ``enrichment_<k>.png``, ``box_<k>.png``;
- ``associate.json``: the settings, the inputs, how many patients each analysis used, the notes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mil_crcrs._version import __version__
from mil_crcrs.atomic import output_dir, refuse_overwrite, write_csv, write_json
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.figures import write_png
from mil_crcrs.omics.cna import cna_tests
from mil_crcrs.omics.expression import DE_METHODS, differential_expression, gene_ranking
from mil_crcrs.omics.figures import box_plot, enrichment_plot, oncoprint, volcano
from mil_crcrs.omics.gsea import prerank, restrict_sets
from mil_crcrs.omics.inputs import (
    expression_by_patient,
    read_scores,
    sample_map_of,
    table_by_patient,
)
from mil_crcrs.omics.mutations import NON_SILENT, matrix_from_table, mutation_matrix, mutation_tests
from mil_crcrs.omics.readers import (
    find_cbioportal,
    is_maf,
    numeric_or_text,
    read_gmt,
    read_maf,
    read_text_table,
)
from mil_crcrs.omics.tables import table_tests

log = logging.getLogger(__name__)
PathLike = str | os.PathLike


@dataclass(frozen=True)
class AssociateSettings:
    """How ``associate`` tests; saved in ``associate.json``.

    Parameters
    ----------
    variant_classes : MAF ``Variant_Classification`` values counted as a mutation
    min_mutated : genes mutated in fewer patients are not tested
    de_method : "auto" (PyDESeq2 for raw counts, else a rank test on log values), "deseq2", "rank"
    permutations : GSEA permutations
    min_set_size, max_set_size : gene sets outside this size (in matrix genes) are skipped
    fdr : the FDR under which a finding is reported as significant (figures, summary)
    n_top : genes / sets / variables drawn in the figures
    min_patients : table columns with fewer patients are skipped
    seed, threads : GSEA's
    """

    variant_classes: tuple[str, ...] = NON_SILENT
    min_mutated: int = 5
    de_method: str = "auto"
    permutations: int = 1000
    min_set_size: int = 15
    max_set_size: int = 500
    fdr: float = 0.05
    n_top: int = 10
    min_patients: int = 10
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.variant_classes:
            raise SettingError("variant_classes", "must name at least one class")
        if self.de_method not in DE_METHODS:
            raise SettingError("de_method", f"must be one of {', '.join(DE_METHODS)}")
        for name in ("min_mutated", "permutations", "min_set_size", "n_top", "threads"):
            if getattr(self, name) < 1:
                raise SettingError(name, "must be at least 1")
        if self.max_set_size < self.min_set_size:
            raise SettingError("max_set_size", "must be at least --min-set-size")
        if not 0 < self.fdr < 1:
            raise SettingError("fdr", "must be between 0 and 1")


@dataclass
class AssociateResult:
    """What :func:`associate` found: the tables by name, figures by file name, notes, and how
    many patients each analysis used."""

    out_dir: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_patients: dict[str, int] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.info("%s", text)


def associate(
    scores: PathLike,
    out_dir: PathLike,
    mutations: PathLike | None = None,
    expression: PathLike | None = None,
    gene_sets: PathLike | None = None,
    tables: Sequence[PathLike] = (),
    cbioportal: PathLike | None = None,
    settings: AssociateSettings = AssociateSettings(),
    cna: PathLike | None = None,
) -> AssociateResult:
    """Test the CRCRS against every omics input given and write the results to ``out_dir``.

    Parameters
    ----------
    scores : ``predictions.csv`` from ``crcrs predict``, or a model directory (its out-of-fold
        CRCRS); ``risk_group`` (the model's cutoff) splits high vs low
    out_dir : output folder (replaced as a whole; it must not hold any input)
    mutations : a MAF, or a patient x gene 0/1 table
    expression : genes x samples (or samples x genes) counts, TPM, RSEM or log values
    gene_sets : a GMT file (needs ``expression``)
    tables : per-patient tables (immune fractions, scores, subtypes ...)
    cbioportal : a cBioPortal study folder; its mutation, expression and CNA files are used
        where not given, its sample table maps samples to patients
    cna : discrete copy number (cBioPortal ``data_cna.txt``, GISTIC -2..2)
    settings : see :class:`AssociateSettings`

    Returns
    -------
    AssociateResult
    """
    out = Path(out_dir)
    given = {"scores": scores, "mutations": mutations, "expression": expression,
             "gene_sets": gene_sets, "cbioportal": cbioportal, "cna": cna}  # fmt: skip
    refuse_overwrite({"out_dir": out}, {**given, "tables": list(tables)}, folders={"out_dir"})
    study = find_cbioportal(cbioportal) if cbioportal is not None else None
    if study is not None:
        mutations = mutations or study.mutations
        expression = expression or study.expression
        cna = cna or study.cna
    if mutations is None and expression is None and cna is None and not tables:
        raise InputError(
            "associate needs --mutations, --expression, --cna, --table or --cbioportal"
        )
    if gene_sets is not None and expression is None:
        raise InputError(f"{gene_sets}: gene sets need an expression matrix (--expression)")
    score_table, score_note = read_scores(scores)
    result = AssociateResult(out)
    result.note(score_note)
    sample_map = sample_map_of(study.samples if study else None)
    if mutations is not None:
        _mutations(result, Path(mutations), score_table, sample_map, settings)
    if cna is not None:
        _cna(result, Path(cna), score_table, sample_map, settings)
    if expression is not None:
        _expression(result, Path(expression), gene_sets, score_table, sample_map, settings)
    if tables:
        _tables(result, [Path(t) for t in tables], score_table, sample_map, settings)
    given = {k: None if v is None else str(v) for k, v in given.items()}
    _write(result, settings, {**given, "tables": [str(t) for t in tables]})
    return result


def _mutations(result, path, scores, sample_map, settings) -> None:
    table = read_text_table(path)
    if is_maf(table) or {"Hugo_Symbol", "Tumor_Sample_Barcode"} & set(table.frame.columns):
        maf = read_maf(table)
        matrix, used = mutation_matrix(maf, scores.index, settings.variant_classes, sample_map)
        what = f"{used}; classes counted: {', '.join(settings.variant_classes)}"
    else:
        by_patient, note = table_by_patient(path, scores.index, sample_map)
        matrix, what = matrix_from_table(by_patient, str(path)), f"0/1 {note}"
    tests, n_skipped = mutation_tests(matrix, scores, settings.min_mutated)
    result.tables["mutations"] = tests
    result.n_patients["mutations"] = len(matrix)
    result.note(
        f"mutations: {path}: {len(matrix)} patients ({what}); {len(tests)} genes tested, "
        f"{n_skipped} mutated in fewer than {settings.min_mutated} patients skipped"
    )
    top = tests["gene"].head(settings.n_top).tolist()
    if top:
        result.figures["oncoprint.png"] = oncoprint(matrix, scores, top)


def _cna(result, path, scores, sample_map, settings) -> None:
    levels, notes = expression_by_patient(path, scores.index, sample_map, what="cna")
    for n in notes:
        result.note(n)
    tests, n_skipped = cna_tests(levels, scores, settings.min_mutated, str(path))
    result.tables["cna"] = tests
    result.n_patients["cna"] = levels.shape[1]
    result.note(
        f"cna: {levels.shape[1]} patients; {len(tests)} gene x alteration tests, {n_skipped} "
        f"altered in fewer than {settings.min_mutated} patients skipped"
    )


def _expression(result, path, gene_sets, scores, sample_map, settings) -> None:
    matrix, notes = expression_by_patient(path, scores.index, sample_map)
    for n in notes:
        result.note(n)
    high = (scores.loc[matrix.columns, "risk_group"] == "high").to_numpy()
    de, what = differential_expression(matrix, high, settings.de_method, str(path))
    result.tables["expression"] = de
    result.n_patients["expression"] = matrix.shape[1]
    result.note(f"expression: {matrix.shape[1]} patients ({int(high.sum())} high); {what}")
    result.figures["volcano.png"] = volcano(de, settings.fdr)
    if gene_sets is None:
        return
    sets = restrict_sets(read_gmt(gene_sets), matrix.index, str(gene_sets))
    ranking = gene_ranking(de)
    gsea = prerank(ranking, sets, settings.permutations, settings.min_set_size,
                   settings.max_set_size, settings.seed, settings.threads)  # fmt: skip
    result.tables["gene_sets"] = gsea.table.assign(n=matrix.shape[1])
    result.n_patients["gene_sets"] = matrix.shape[1]
    result.note(
        f"gene sets: {gene_sets}: {len(gsea.table)} sets tested on {len(ranking)} ranked genes, "
        f"{gsea.n_skipped} outside {settings.min_set_size}-{settings.max_set_size} genes skipped"
    )
    for k, row in gsea.table.head(min(3, settings.n_top)).iterrows():
        curve, hits = gsea.curves[row["gene_set"]]
        fig = enrichment_plot(row["gene_set"], curve, hits, row)
        result.figures[f"enrichment_{k + 1}.png"] = fig


def _tables(result, paths, scores, sample_map, settings) -> None:
    frames = {}
    for path in paths:
        frame, note = table_by_patient(path, scores.index, sample_map)
        frames[path.stem] = frame
        result.note(note)
    tests, skipped = table_tests(frames, scores, settings.min_patients)
    for n in skipped:
        result.note(n)
    result.tables["patient_tables"] = tests
    result.n_patients["patient_tables"] = len(set().union(*(f.index for f in frames.values())))
    for k, row in tests.head(min(4, settings.n_top)).iterrows():
        values = numeric_or_text(frames[row["table"]][row["variable"]]).dropna()
        title = f"{row['variable']} ({row['table']}): p {row['p']:.3g}, FDR {row['fdr']:.3g}"
        result.figures[f"box_{k + 1}.png"] = box_plot(values, scores, title)


def _write(result: AssociateResult, settings: AssociateSettings, inputs: dict) -> None:
    with output_dir(result.out_dir) as tmp:  # all of one run, or the previous run's untouched
        for name, table in result.tables.items():
            write_csv(tmp / f"{name}.csv", table)
        for name, fig in result.figures.items():
            write_png(tmp / "figures" / name, fig)
        write_json(
            tmp / "associate.json",
            {
                "version": __version__,
                "settings": asdict(settings),
                "inputs": inputs,
                "n_patients": result.n_patients,
                "notes": result.notes,
            },
        )
