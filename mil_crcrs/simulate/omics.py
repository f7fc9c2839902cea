"""A simulated multi-omics cohort, written as a cBioPortal study folder.

Given each patient's true risk (the log-hazard of :mod:`mil_crcrs.simulate` or of the demo's
cohort), :func:`simulate_omics` draws, with ``z`` the risk standardised over the cohort:

- **mutations**: ``n_mutation_genes`` genes, each with a base rate in 3-25%; the first
  ``n_planted_genes`` (``PLANTED_MUT<k>``) have ``logit p = logit p0 + mutation_log_odds * z``,
  the others (``NULL_MUT<k>``) do not depend on the risk. Mutations get non-silent classes; every
  patient also carries silent mutations in random genes (which ``associate`` must not count);
- **expression**: ``n_genes`` genes with log2 means ~ N(6, 1.5) and noise sd 1; the genes of
  ``PLANTED_SET`` (``set_size`` genes) move by ``set_shift * z`` on the log2 scale; written as
  ``2^x - 1`` (non-integer, non-negative: cBioPortal's RSEM file). ``n_normal_samples`` patients
  also have a normal sample (TCGA type 11), which ``associate`` must leave out;
- **gene sets** (``gene_sets.gmt``): ``PLANTED_SET`` and ``n_gene_sets - 1`` null sets drawn
  from the other genes;
- **copy number** (``data_cna.txt``, GISTIC -2..2): ``PLANTED_AMP1`` amplified more often with
  risk (10% at average risk, ``mutation_log_odds`` per sd), the other genes at random;
- **immune cells** (``data_immune.txt``): ``n_cell_types`` independent absolute abundances
  (CIBERSORTx absolute mode), ``log a = N(0, 1)``, the first (``Macrophages M2``) plus
  ``immune_effect * z``; and a null categorical table ``data_subtypes.txt`` (CMS, MSI);
- **outcome** (``data_clinical_patient.txt``): ``OS_MONTHS`` and ``OS_STATUS`` (``1:DECEASED`` /
  ``0:LIVING``) from an exponential hazard ``exp(risk)`` with uniform censoring, unless given.

Patient ids that are TCGA barcodes get TCGA sample barcodes (``-01``, MAF aliquots
``-01A-11D-...``); others get ``<patient>-T`` samples (normals ``<patient>-N``), named in
``data_clinical_sample.txt`` with their ``SAMPLE_TYPE`` (``Primary``, ``Solid Tissue Normal``).
``truth.json`` lists what was planted.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.atomic import atomic_path, write_json
from mil_crcrs.omics.barcodes import tcga_patient

CELL_TYPES = ("Macrophages M2", "T cells CD8", "B cells naive", "NK cells activated",
              "Macrophages M1", "Neutrophils", "Mast cells resting", "Dendritic cells")  # fmt: skip
NON_SILENT_DRAWN = ("Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Splice_Site")
PLANTED_SET = "PLANTED_SET"


@dataclass(frozen=True)
class OmicsSimulationSettings:
    """Sizes and effect sizes of :func:`simulate_omics` (effects per sd of the true risk)."""

    n_genes: int = 2000
    n_mutation_genes: int = 200
    n_planted_genes: int = 4
    mutation_log_odds: float = 1.5
    n_gene_sets: int = 20
    set_size: int = 40
    set_shift: float = 0.35
    n_cell_types: int = 6
    immune_effect: float = 0.5
    n_cna_genes: int = 100
    n_normal_samples: int = 5
    seed: int = 0


@dataclass(frozen=True)
class SimulatedOmics:
    """Where :func:`simulate_omics` wrote the study, and what it planted."""

    folder: Path
    gene_sets: Path
    immune: Path
    subtypes: Path
    planted_genes: tuple[str, ...]
    null_genes: tuple[str, ...]
    planted_set: str
    null_sets: tuple[str, ...]
    planted_cell_type: str


def simulate_omics(
    risk: pd.Series,
    out_dir: str | os.PathLike,
    settings: OmicsSimulationSettings = OmicsSimulationSettings(),
    outcome: pd.DataFrame | None = None,
) -> SimulatedOmics:
    """Draw and write the study (see the module docstring).

    Parameters
    ----------
    risk : (n_patients,) true risk (log-hazard) indexed by patient id
    out_dir : the study folder to write
    settings : sizes, effects and seed
    outcome : ``OS_MONTHS`` and ``OS_STATUS`` (1/0) per patient, to write instead of drawing

    Returns
    -------
    SimulatedOmics
    """
    s = settings
    rng = np.random.default_rng(s.seed)
    ids = [str(p) for p in risk.index]
    z = risk.to_numpy(float)
    z = (z - z.mean()) / (z.std() or 1.0)
    out = Path(out_dir)
    sample = {p: f"{p}-01" if tcga_patient(p) == p else f"{p}-T" for p in ids}
    _write_clinical(out, ids, sample, risk, outcome, rng, s.n_normal_samples)
    genes = _write_mutations(out, ids, sample, z, s, rng)
    set_names = _write_expression(out, ids, sample, z, s, rng)
    _write_cna(out, ids, sample, z, s, rng)
    cells = _write_tables(out, ids, sample, z, s, rng)
    truth = SimulatedOmics(
        folder=out,
        gene_sets=out / "gene_sets.gmt",
        immune=out / "data_immune.txt",
        subtypes=out / "data_subtypes.txt",
        planted_genes=genes[: s.n_planted_genes],
        null_genes=genes[s.n_planted_genes :],
        planted_set=PLANTED_SET,
        null_sets=tuple(n for n in set_names if n != PLANTED_SET),
        planted_cell_type=cells[0],
    )
    write_json(out / "truth.json", {**asdict(truth), "settings": asdict(s)})
    return truth


def _write_tsv(path: Path, frame: pd.DataFrame, header_lines: int = 0) -> None:
    """A tab-separated file; with ``header_lines`` cBioPortal's four ``#`` lines first."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            if header_lines:
                cols = list(frame.columns)
                fh.write("#" + "\t".join(c.replace("_", " ").title() for c in cols) + "\n")
                fh.write("#" + "\t".join(cols) + "\n")
                kinds = ["NUMBER" if pd.api.types.is_numeric_dtype(frame[c]) else "STRING"
                         for c in cols]  # fmt: skip
                fh.write("#" + "\t".join(kinds) + "\n")
                fh.write("#" + "\t".join("1" for _ in cols) + "\n")
            frame.to_csv(fh, sep="\t", index=False, float_format="%.4g", lineterminator="\n")


def _normal_id(patient: str) -> str:
    """The normal sample of a patient: TCGA type 11, or ``<patient>-N``."""
    return f"{patient}-11" if tcga_patient(patient) == patient else f"{patient}-N"


def _write_clinical(out, ids, sample, risk, outcome, rng, n_normal) -> None:
    if outcome is None:
        hazard = 0.02 * np.exp(risk.to_numpy(float) - risk.mean())
        t_event = rng.exponential(1.0 / hazard)
        t_cens = rng.uniform(12.0, 120.0, len(ids))
        months, status = np.minimum(t_event, t_cens), (t_event <= t_cens).astype(int)
    else:
        months = outcome.loc[ids, "OS_MONTHS"].to_numpy(float)
        status = outcome.loc[ids, "OS_STATUS"].to_numpy(int)
    patients = pd.DataFrame(
        {
            "PATIENT_ID": ids,
            "OS_STATUS": np.where(status == 1, "1:DECEASED", "0:LIVING"),
            "OS_MONTHS": np.round(months, 2),
            "AGE": rng.integers(40, 85, len(ids)),
        }
    )
    _write_tsv(out / "data_clinical_patient.txt", patients, header_lines=4)
    samples = pd.DataFrame(
        {
            "PATIENT_ID": ids + ids[:n_normal],
            "SAMPLE_ID": [sample[p] for p in ids] + [_normal_id(p) for p in ids[:n_normal]],
            "SAMPLE_TYPE": ["Primary"] * len(ids) + ["Solid Tissue Normal"] * n_normal,
        }
    )
    _write_tsv(out / "data_clinical_sample.txt", samples, header_lines=4)


def _write_mutations(out, ids, sample, z, s, rng) -> tuple[str, ...]:
    planted = [f"PLANTED_MUT{k + 1}" for k in range(s.n_planted_genes)]
    genes = planted + [f"NULL_MUT{k + 1:03d}" for k in range(s.n_mutation_genes - len(planted))]
    base = rng.uniform(0.03, 0.25, len(genes))
    logit = np.log(base / (1 - base))[None, :] + np.zeros((len(ids), 1))
    logit[:, : len(planted)] += s.mutation_log_odds * z[:, None]
    mutated = rng.random(logit.shape) < 1.0 / (1.0 + np.exp(-logit))
    rows = []
    for i, g in zip(*np.nonzero(mutated), strict=True):
        rows.append((genes[g], ids[i], NON_SILENT_DRAWN[rng.integers(len(NON_SILENT_DRAWN))]))
    for p in ids:  # silent and UTR mutations, never counted
        for g in rng.choice(len(genes), 2, replace=False):
            rows.append((genes[g], p, ("Silent", "3'UTR")[int(rng.integers(2))]))
    maf = pd.DataFrame(rows, columns=["Hugo_Symbol", "patient", "Variant_Classification"])
    barcode = {p: f"{sample[p]}A-11D-A{i:03d}-10" if sample[p].endswith("-01") else sample[p]
               for i, p in enumerate(ids)}  # fmt: skip
    maf.insert(1, "Entrez_Gene_Id", 0)
    maf.insert(2, "Tumor_Sample_Barcode", maf.pop("patient").map(barcode))
    maf["HGVSp_Short"] = "p.X1X"
    with atomic_path(out / "data_mutations.txt") as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("#version 2.4\n")
            maf.to_csv(fh, sep="\t", index=False, lineterminator="\n")
    return tuple(genes)


def _write_expression(out, ids, sample, z, s, rng) -> list[str]:
    genes = [f"GENE{k + 1:05d}" for k in range(s.n_genes)]
    logx = rng.normal(6.0, 1.5, (s.n_genes, 1)) + rng.normal(0.0, 1.0, (s.n_genes, len(ids)))
    in_set = rng.choice(s.n_genes, s.set_size, replace=False)
    logx[in_set] += s.set_shift * z[None, :]
    columns = [sample[p] for p in ids]
    normals = rng.normal(6.0, 1.0, (s.n_genes, s.n_normal_samples))
    normal_ids = [_normal_id(p) for p in ids[: s.n_normal_samples]]
    values = np.exp2(np.hstack([logx, normals])) - 1.0
    matrix = pd.DataFrame(values.clip(0), columns=columns + normal_ids)
    matrix.insert(0, "Hugo_Symbol", genes)
    matrix.insert(1, "Entrez_Gene_Id", np.arange(1, s.n_genes + 1))
    _write_tsv(out / "data_mrna_seq_v2_rsem.txt", matrix)
    others = np.setdiff1d(np.arange(s.n_genes), in_set)
    sets = {PLANTED_SET: [genes[i] for i in in_set]}
    for k in range(s.n_gene_sets - 1):
        sets[f"NULL_SET{k + 1:02d}"] = [genes[i] for i in rng.choice(others, s.set_size, False)]
    with atomic_path(out / "gene_sets.gmt") as tmp:
        tmp.write_text("".join(f"{n}\tsimulated\t" + "\t".join(g) + "\n" for n, g in sets.items()))
    return list(sets)


def _write_cna(out, ids, sample, z, s, rng) -> None:
    """GISTIC-like calls: ``PLANTED_AMP1`` amplified with ``logit p = logit 0.1 +
    mutation_log_odds * z``, the other genes amplified (5%) or deeply deleted (3%) at random."""
    draw = rng.random((s.n_cna_genes, len(ids)))
    calls = np.select([draw < 0.03, draw < 0.08, draw < 0.4, draw < 0.7], [-2, 2, -1, 1], 0)
    p_amp = 1.0 / (1.0 + np.exp(-(np.log(0.1 / 0.9) + s.mutation_log_odds * z)))
    calls[0] = np.where(rng.random(len(ids)) < p_amp, 2, calls[0].clip(-1, 1))
    genes = ["PLANTED_AMP1"] + [f"NULL_CNA{k:03d}" for k in range(1, s.n_cna_genes)]
    frame = pd.DataFrame(calls, columns=[sample[p] for p in ids])
    frame.insert(0, "Hugo_Symbol", genes)
    frame.insert(1, "Entrez_Gene_Id", np.arange(1, s.n_cna_genes + 1))
    _write_tsv(out / "data_cna.txt", frame)


def _write_tables(out, ids, sample, z, s, rng) -> tuple[str, ...]:
    cells = CELL_TYPES[: s.n_cell_types]
    log_a = rng.normal(0.0, 1.0, (len(ids), len(cells)))
    log_a[:, 0] += s.immune_effect * z
    immune = pd.DataFrame(np.exp(log_a) / 10.0, columns=list(cells))
    immune.insert(0, "Mixture", [sample[p] for p in ids])
    _write_tsv(out / "data_immune.txt", immune)
    subtypes = pd.DataFrame(
        {
            "SAMPLE_ID": [sample[p] for p in ids],
            "CMS": rng.choice(["CMS1", "CMS2", "CMS3", "CMS4"], len(ids)),
            "MSI_STATUS": rng.choice(["MSI-H", "MSS"], len(ids), p=[0.15, 0.85]),
        }
    )
    _write_tsv(out / "data_subtypes.txt", subtypes)
    return tuple(cells)


def simulated_scores(risk: pd.Series, noise_sd: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """A stand-in CRCRS: the standardised true risk plus N(0, ``noise_sd``) noise, split at its
    median; ``patient_id, crcrs, risk_group`` as ``crcrs predict`` writes them."""
    rng = np.random.default_rng(seed)
    z = (risk.to_numpy(float) - risk.mean()) / (risk.std(ddof=0) or 1.0)
    crcrs = z + rng.normal(0.0, noise_sd, len(z))
    group = np.where(crcrs > np.median(crcrs), "high", "low")
    return pd.DataFrame({"patient_id": risk.index.astype(str), "crcrs": crcrs, "risk_group": group})
