"""The demo's omics step: a simulated cBioPortal study of the demo's own patients, tested
against their out-of-fold CRCRS with ``associate``.

The study (:func:`mil_crcrs.simulate.omics.simulate_omics`) draws mutations, expression and
immune cells of which a few depend on each patient's *true* simulated risk (``truth.csv``); the
outcome written in its ``data_clinical_patient.txt`` is the demo cohort's own (days turned into
months, as cBioPortal keeps it). ``associate`` then sees only the files and the model's scores,
as it would with a real TCGA download. Sizes are small so that the step takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mil_crcrs.data.cohort import DAYS_PER_UNIT

#: Small study: seconds on two cores. Effects are the simulator's defaults.
DEMO_GENES, DEMO_MUTATION_GENES, DEMO_SETS, DEMO_PERMUTATIONS = 500, 60, 10, 200


def run_associate_step(
    out: Path, model_dir: Path, truth_csv: Path, clinical_csv: Path, seed: int
) -> Path:
    """Simulate the study in ``out/omics`` and write ``associate``'s results to
    ``out/associate``; returns that folder."""
    from mil_crcrs.omics import AssociateSettings, associate
    from mil_crcrs.simulate.omics import OmicsSimulationSettings, simulate_omics

    truth = pd.read_csv(truth_csv, dtype={"patient_id": str}).set_index("patient_id")
    clinical = pd.read_csv(clinical_csv, dtype={"patient_id": str})
    per_patient = clinical.groupby("patient_id")[["time", "event"]].first()
    outcome = pd.DataFrame(
        {
            "OS_MONTHS": per_patient["time"] / DAYS_PER_UNIT["months"],
            "OS_STATUS": per_patient["event"],
        }
    )
    settings = OmicsSimulationSettings(
        n_genes=DEMO_GENES,
        n_mutation_genes=DEMO_MUTATION_GENES,
        n_gene_sets=DEMO_SETS,
        set_size=25,
        seed=seed,
    )
    sim = simulate_omics(truth["true_risk"], out / "omics", settings, outcome=outcome)
    associate(
        model_dir,
        out / "associate",
        gene_sets=sim.gene_sets,
        tables=[sim.immune, sim.subtypes],
        cbioportal=sim.folder,
        settings=AssociateSettings(permutations=DEMO_PERMUTATIONS, seed=seed),
    )
    return out / "associate"
