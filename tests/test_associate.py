"""``crcrs associate``: barcodes, MAF filtering, the tests against scipy/statsmodels, GSEA's sign,
the simulated cBioPortal study end to end, and every bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli.main import cli
from mil_crcrs.errors import InputError
from mil_crcrs.omics import AssociateSettings, associate
from mil_crcrs.omics.barcodes import map_samples, tcga_patient, tcga_sample_type
from mil_crcrs.omics.expression import differential_expression, expression_kind, gene_ranking
from mil_crcrs.omics.gsea import prerank
from mil_crcrs.omics.mutations import bh_fdr, mutation_matrix, mutation_tests
from mil_crcrs.omics.readers import read_maf
from mil_crcrs.omics.tables import table_tests
from mil_crcrs.simulate.omics import OmicsSimulationSettings, simulate_omics, simulated_scores

MAF_HEADER = "Hugo_Symbol\tEntrez_Gene_Id\tTumor_Sample_Barcode\tVariant_Classification\n"


def _scores(n: int, seed: int = 0) -> pd.DataFrame:
    ids = [f"TCGA-AA-{i:04d}" for i in range(n)]
    crcrs = np.random.default_rng(seed).normal(size=n)
    group = np.where(crcrs > np.median(crcrs), "high", "low")
    return pd.DataFrame({"crcrs": crcrs, "risk_group": group}, index=pd.Index(ids))


def _one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


# --- barcodes ---------------------------------------------------------------------------------


def test_tcga_barcodes_name_the_patient_and_the_sample_type():
    assert tcga_patient("TCGA-AA-3514-01A-01D-1234-10") == "TCGA-AA-3514"
    assert tcga_patient("TCGA-AA-3514") == "TCGA-AA-3514"
    assert tcga_patient("P001-T") is None
    assert tcga_sample_type("TCGA-AA-3514-01A-01D-1234-10") == 1
    assert tcga_sample_type("TCGA-AA-3514-11") == 11
    assert tcga_sample_type("TCGA-AA-3514") is None


def test_tumour_samples_are_used_normals_left_out_and_counted():
    samples = ["TCGA-AA-0001-01", "TCGA-AA-0001-11", "TCGA-AA-0002-06", "TCGA-AA-0099-01",
               "TCGA-AA-0003-10"]  # fmt: skip
    mapping = map_samples(samples, ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"], "f")
    assert mapping.patient_of == {
        "TCGA-AA-0001-01": "TCGA-AA-0001",
        "TCGA-AA-0002-06": "TCGA-AA-0002",  # a metastasis (06) is a tumour sample
    }
    assert mapping.n_normal == 2 and mapping.unmatched == ("TCGA-AA-0099-01",)
    assert "2 normal/control samples" in mapping.describe()


def test_a_cbioportal_sample_table_maps_non_tcga_samples():
    mapping = map_samples(["S1", "S2"], ["P1", "P2"], "f", {"S1": "P1", "S2": "P2"})
    assert mapping.patient_of == {"S1": "P1", "S2": "P2"}


def test_a_sample_table_s_normal_samples_are_left_out():
    from mil_crcrs.omics.barcodes import sample_table_map

    table = pd.DataFrame({"PATIENT_ID": ["P1", "P1", "P2"], "SAMPLE_ID": ["S1", "S1-N", "S2"],
                          "SAMPLE_TYPE": ["Primary", "Solid Tissue Normal", "Metastasis"]})  # fmt: skip
    mapping = map_samples(["S1", "S1-N", "S2"], ["P1", "P2"], "f", sample_table_map(table, "t"))
    assert mapping.patient_of == {"S1": "P1", "S2": "P2"} and mapping.n_normal == 1


def test_two_tumour_samples_of_one_patient_is_an_error():
    with pytest.raises(InputError, match="TCGA-AA-0001.*two tumour samples"):
        map_samples(["TCGA-AA-0001-01", "TCGA-AA-0001-02"], ["TCGA-AA-0001"], "f")


# --- mutations --------------------------------------------------------------------------------


def _write_maf(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    body = "".join(f"{g}\t0\t{s}\t{c}\n" for g, s, c in rows)
    path.write_text("#version 2.4\n" + MAF_HEADER + body)
    return path


def test_the_maf_counts_non_silent_classes_and_a_flag_changes_them(tmp_path):
    maf = _write_maf(
        tmp_path / "m.maf",
        [
            ("APC", "TCGA-AA-0000-01A-01D-0001-10", "Nonsense_Mutation"),
            ("APC", "TCGA-AA-0000-01B-01D-0002-10", "Missense_Mutation"),  # 2nd aliquot, 1 sample
            ("TTN", "TCGA-AA-0001-01A-01D-0003-10", "Silent"),
            ("SMAD2", "TCGA-AA-0001-01A-01D-0003-10", "3'UTR"),
            ("KRAS", "TCGA-AA-0002-01A-01D-0004-10", "Missense_Mutation"),
        ],
    )
    scored = ["TCGA-AA-0000", "TCGA-AA-0001", "TCGA-AA-0002"]
    matrix, note = mutation_matrix(read_maf(maf), scored)
    assert sorted(matrix.columns) == ["APC", "KRAS"]  # silent and UTR not counted
    assert list(matrix.index) == scored  # a patient with only silent mutations is still tested
    assert matrix.loc["TCGA-AA-0000", "APC"] and not matrix.loc["TCGA-AA-0001"].any()
    wider, _ = mutation_matrix(read_maf(maf), scored, classes=("Silent", "Missense_Mutation"))
    assert sorted(wider.columns) == ["APC", "KRAS", "TTN"]
    assert "3 tumour samples" in note


def test_fisher_and_fdr_match_scipy_and_statsmodels():
    from scipy.stats import fisher_exact, mannwhitneyu
    from statsmodels.stats.contingency_tables import Table2x2
    from statsmodels.stats.multitest import multipletests

    scores = _scores(80)
    rng = np.random.default_rng(1)
    matrix = pd.DataFrame(rng.random((80, 12)) < 0.3, index=scores.index,
                          columns=[f"G{k}" for k in range(12)])  # fmt: skip
    matrix["G0"] = (scores["risk_group"] == "high").to_numpy() & (rng.random(80) < 0.6)
    matrix["RARE"] = False
    matrix.iloc[:2, -1] = True
    table, n_skipped = mutation_tests(matrix, scores, min_mutated=5)
    assert n_skipped == 1 and "RARE" not in set(table["gene"])
    high = (scores["risk_group"] == "high").to_numpy()
    for _, row in table.iterrows():
        m = matrix[row["gene"]].to_numpy()
        t = np.array(
            [[(m & high).sum(), (~m & high).sum()], [(m & ~high).sum(), (~m & ~high).sum()]]
        )
        assert row["p_fisher"] == pytest.approx(fisher_exact(t)[1], rel=1e-12)
        ci = Table2x2(t, shift_zeros=True).oddsratio_confint()
        assert (row["or_ci_low"], row["or_ci_high"]) == pytest.approx(ci, rel=1e-12)
        p_rank = mannwhitneyu(scores["crcrs"][m], scores["crcrs"][~m], method="asymptotic")[1]
        assert row["p_rank"] == pytest.approx(p_rank, rel=1e-12)
    expected = multipletests(table["p_fisher"], method="fdr_bh")[1]
    np.testing.assert_allclose(table["fdr_fisher"], expected, rtol=1e-12)
    assert table["gene"].iloc[0] == "G0" and table["odds_ratio"].iloc[0] > 1
    p = np.array([0.01, np.nan, 0.04, 0.5])
    q = bh_fdr(p)
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="fdr_bh")[1])


def test_the_vectorised_rank_test_matches_scipy_with_ties():
    from scipy.stats import mannwhitneyu

    from mil_crcrs.omics.mutations import rank_test

    rng = np.random.default_rng(4)
    score = np.round(rng.normal(size=50), 1)  # many ties
    groups = rng.random((50, 6)) < 0.3
    auc, p = rank_test(score, groups)
    for k in range(6):
        u, p_scipy = mannwhitneyu(score[groups[:, k]], score[~groups[:, k]], method="asymptotic")
        assert p[k] == pytest.approx(p_scipy, rel=1e-10)
        assert auc[k] == pytest.approx(u / (groups[:, k].sum() * (~groups[:, k]).sum()))


# --- expression and GSEA ----------------------------------------------------------------------


def test_what_the_matrix_holds_picks_the_test():
    assert expression_kind(np.array([[0, 5, 1200], [3, 0, 7]])) == "counts"
    assert expression_kind(np.array([[0.5, 5.2, 1200.7]])) == "linear"
    assert expression_kind(np.array([[-1.2, 3.4, 8.0]])) == "log"


def _planted_expression(n: int = 60, n_genes: int = 300, shift: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    high = np.arange(n) < n // 2
    genes = [f"G{k:03d}" for k in range(n_genes)]
    logx = rng.normal(5.0, 1.0, (n_genes, n))
    logx[:20, high] += shift  # G000-G019 up in high risk
    logx[20:40, high] -= shift  # G020-G039 down
    return pd.DataFrame(logx, index=genes), high, genes


def test_gsea_nes_sign_follows_the_planted_direction():
    matrix, high, genes = _planted_expression()
    de, note = differential_expression(matrix, high)
    assert "Mann-Whitney" in note and "log values as given" in note
    sets = {"UP": genes[:20], "DOWN": genes[20:40], "NULL": genes[100:120]}
    result = prerank(gene_ranking(de), sets, permutations=200, min_size=10, seed=0)
    nes = result.table.set_index("gene_set")["nes"]
    fdr = result.table.set_index("gene_set")["fdr"]
    assert nes["UP"] > 1.5 and nes["DOWN"] < -1.5
    assert fdr["UP"] < 0.05 and fdr["DOWN"] < 0.05 and fdr["NULL"] > 0.05


# pydeseq2's own note when its parametric dispersion trend does not converge on 200 genes
@pytest.mark.filterwarnings("ignore:The dispersion trend curve fitting did not converge")
def test_deseq2_runs_on_raw_counts():
    rng = np.random.default_rng(0)
    high = np.arange(24) < 12
    mu = np.exp(rng.uniform(np.log(5), np.log(5000), (200, 1))) * np.ones((1, 24))
    mu[0, high] *= 4.0
    counts = pd.DataFrame(
        rng.negative_binomial(10, 10 / (10 + mu)), index=[f"G{k}" for k in range(200)]
    )
    de, note = differential_expression(counts, high)
    assert note.startswith("PyDESeq2")
    top = de.iloc[0]
    assert top["gene"] == "G0" and top["log2_fold_change"] == pytest.approx(2.0, abs=0.3)


# --- per-patient tables -----------------------------------------------------------------------


def test_patient_tables_spearman_kruskal_and_one_family():
    from scipy.stats import kruskal, spearmanr

    scores = _scores(60)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "cd8": scores["crcrs"].to_numpy() + rng.normal(0, 0.5, 60),
            "m2": rng.normal(size=60),
            "cms": rng.choice(["CMS1", "CMS2", "CMS3"], 60),
        },
        index=scores.index,
    )
    out, notes = table_tests({"immune": frame}, scores)
    row = out.set_index("variable")
    assert row.loc["cd8", "p"] == pytest.approx(spearmanr(frame["cd8"], scores["crcrs"])[1])
    groups = [scores["crcrs"][frame["cms"] == c] for c in ("CMS1", "CMS2", "CMS3")]
    assert row.loc["cms", "p"] == pytest.approx(kruskal(*groups)[1])
    assert row.loc["cms", "kind"] == "categorical" and not notes
    np.testing.assert_allclose(out["fdr"], bh_fdr(out["p"]))


# --- the simulated study, end to end -----------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(3)
    ids = [f"TCGA-SM-{i:04d}" for i in range(160)]
    risk = pd.Series(rng.normal(size=160), index=ids)
    settings = OmicsSimulationSettings(
        n_genes=400, n_mutation_genes=40, n_gene_sets=6, set_size=25, set_shift=0.8,
        mutation_log_odds=2.0, immune_effect=1.0, seed=3,
    )  # fmt: skip
    sim = simulate_omics(risk, root / "study", settings)
    simulated_scores(risk, noise_sd=0.3, seed=3).to_csv(root / "predictions.csv", index=False)
    return root, sim


def test_associate_finds_what_the_simulated_study_planted(study):
    root, sim = study
    result = associate(
        root / "predictions.csv",
        root / "out",
        gene_sets=sim.gene_sets,
        tables=[sim.immune, sim.subtypes],
        cbioportal=sim.folder,
        settings=AssociateSettings(permutations=200),
    )
    mut = result.tables["mutations"].set_index("gene")
    assert (mut.loc[list(sim.planted_genes), "fdr_fisher"] < 0.05).all()
    assert (mut.loc[list(sim.planted_genes), "odds_ratio"] > 1).all()
    cna = result.tables["cna"].set_index(["gene", "alteration"])
    assert cna.loc[("PLANTED_AMP1", "amplification (2)"), "fdr_fisher"] < 0.05
    assert "copy number: BH across" in cna["family"].iloc[0]
    sets = result.tables["gene_sets"].set_index("gene_set")
    assert sets.loc[sim.planted_set, "fdr"] < 0.05 and sets.loc[sim.planted_set, "nes"] > 0
    tables = result.tables["patient_tables"]
    assert tables["variable"].iloc[0] == sim.planted_cell_type
    assert result.n_patients == {"mutations": 160, "cna": 160, "expression": 160,
                                 "gene_sets": 160, "patient_tables": 160}  # fmt: skip
    summary = json.loads((root / "out" / "associate.json").read_text())
    assert any("5 normal/control samples" in n for n in summary["notes"])
    for name in ("mutations", "expression", "gene_sets", "patient_tables"):
        table = pd.read_csv(root / "out" / f"{name}.csv")
        assert {"family"} <= set(table.columns) and len(table) > 0
    figures = sorted(p.name for p in (root / "out" / "figures").iterdir())
    assert {"oncoprint.png", "volcano.png", "enrichment_1.png", "box_1.png"} <= set(figures)


def test_the_report_section_shows_the_top_findings_with_figures(study):
    from mil_crcrs.stats.report.associate import associate_section

    root, sim = study
    page = associate_section(root / "out")
    assert "What goes with a high CRCRS" in page and "PLANTED_MUT" in page
    assert "Fisher" in page and "BH across" in page and "on 160 patients" in page
    assert page.count("data:image/png;base64") >= 4
    with pytest.raises(InputError, match="no associate.json"):
        associate_section(sim.folder)


def test_report_reads_the_cbioportal_clinical_file_and_shows_the_section(study):
    root, sim = study
    associate(root / "predictions.csv", root / "rep-assoc", cbioportal=sim.folder,
              settings=AssociateSettings(permutations=50))  # fmt: skip
    out = root / "report"
    result = CliRunner().invoke(cli, [
        "report", "--predictions", str(root / "predictions.csv"),
        "--clinical", str(sim.folder / "data_clinical_patient.txt"), "--patient-col", "PATIENT_ID",
        "--time-col", "OS_MONTHS", "--event-col", "OS_STATUS", "--time-unit", "months",
        "--covariates", "AGE", "--horizons", "1,2", "--bootstrap", "0",
        "--associate", str(root / "rep-assoc"), "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "What goes with a high CRCRS" in page and "PLANTED_MUT" in page
    clinical = pd.read_csv(sim.folder / "data_clinical_patient.txt", sep="\t", comment="#")
    events = int(clinical["OS_STATUS"].str.startswith("1:").sum())
    cohorts = pd.read_csv(out / "cohorts.csv")
    assert int(cohorts["events"].iloc[0]) == events  # every 1:DECEASED read as an event


def test_the_cli_writes_a_run_log_with_patient_counts(study):
    root, sim = study
    out = root / "cli-out"
    result = CliRunner().invoke(cli, ["associate", "--scores", str(root / "predictions.csv"),
                                      "--cbioportal", str(sim.folder), "--out", str(out),
                                      "--variant-classes", "Missense_Mutation"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mutations: " in result.output and "on 160 patients" in result.output
    log = (out / "run.log").read_text()
    assert "160 tumour samples of scored patients used" in log and "classes counted: " in log
    assert "classes counted: Missense_Mutation)" in log


def test_plain_tables_samples_by_genes_and_a_0_1_mutation_table(tmp_path):
    scores = _scores(40, seed=5)
    scores.rename_axis("patient_id").reset_index().to_csv(tmp_path / "pred.csv", index=False)
    rng = np.random.default_rng(5)
    high = (scores["risk_group"] == "high").to_numpy()
    tpm = np.exp2(rng.normal(5, 1, (40, 30)))  # patients x genes, TPM-like
    tpm[high, 0] *= 8.0
    pd.DataFrame(tpm, index=scores.index, columns=[f"G{k}" for k in range(30)]).rename_axis(
        "patient_id"
    ).to_csv(tmp_path / "tpm.csv")
    muts = pd.DataFrame(rng.random((40, 3)) < 0.4, index=scores.index, columns=["A", "B", "C"])
    muts.astype(int).rename_axis("patient_id").to_csv(tmp_path / "muts.csv")
    result = associate(tmp_path / "pred.csv", tmp_path / "out", mutations=tmp_path / "muts.csv",
                       expression=tmp_path / "tpm.csv")  # fmt: skip
    de = result.tables["expression"]
    assert de["gene"].iloc[0] == "G0" and de["log2_fold_change"].iloc[0] > 2
    assert "log2(x + 1) of linear values" in de["test"].iloc[0] and (de["n"] == 40).all()
    assert sorted(result.tables["mutations"]["gene"]) == ["A", "B", "C"]
    assert result.n_patients == {"mutations": 40, "expression": 40}


# --- bad inputs: one line each ----------------------------------------------------------------


def _run(*args: str):
    return CliRunner().invoke(cli, ["associate", *args])


def test_bad_inputs_each_give_one_line(study, tmp_path):
    root, sim = study
    scores = str(root / "predictions.csv")
    expr = sim.folder / "data_mrna_seq_v2_rsem.txt"
    gmt = tmp_path / "other.gmt"
    gmt.write_text("SET\tdesc\tTP53\tAPC\tKRAS\n")
    _one_line_error(_run("--scores", scores, "--expression", str(expr), "--gene-sets", str(gmt),
                         "--out", str(tmp_path / "o1")), "other.gmt", "no gene of any gene set")  # fmt: skip
    other = tmp_path / "other.tsv"
    other.write_text("Hugo_Symbol\tX-1\tX-2\nA\t1\t2\n")
    _one_line_error(_run("--scores", scores, "--expression", str(other), "--out",
                         str(tmp_path / "o2")), "other.tsv", "no sample matches a scored patient")  # fmt: skip
    dup = tmp_path / "dup.tsv"
    dup.write_text("Hugo_Symbol\tTCGA-SM-0000-01\tTCGA-SM-0000-02\nA\t1\t2\n")
    _one_line_error(_run("--scores", scores, "--expression", str(dup), "--out",
                         str(tmp_path / "o3")), "dup.tsv", "TCGA-SM-0000", "two tumour samples")  # fmt: skip
    nan = tmp_path / "nan.tsv"
    nan.write_text("Hugo_Symbol\tTCGA-SM-0000-01\tTCGA-SM-0001-01\nA\t1\t2\nB\tNA\t3\n")
    _one_line_error(_run("--scores", scores, "--expression", str(nan), "--out",
                         str(tmp_path / "o4")), "nan.tsv", "line 3", "'B' holds NaN")  # fmt: skip
    maf = tmp_path / "bad.maf"
    maf.write_text("Hugo_Symbol\tTumor_Sample_Barcode\nAPC\tTCGA-SM-0000-01\n")
    _one_line_error(_run("--scores", scores, "--mutations", str(maf), "--out",
                         str(tmp_path / "o5")), "bad.maf", "Variant_Classification")  # fmt: skip


def test_more_bad_inputs(study, tmp_path):
    root, sim = study
    scores = str(root / "predictions.csv")
    _one_line_error(_run("--scores", scores, "--out", str(tmp_path / "o")), "needs --mutations")
    _one_line_error(_run("--scores", scores, "--cbioportal", str(sim.folder), "--out",
                         str(sim.folder)), "--out is the input --cbioportal")  # fmt: skip
    _one_line_error(_run("--scores", scores, "--table", str(sim.immune), "--min-mutated", "0",
                         "--out", str(tmp_path / "o")), "--min-mutated")  # fmt: skip
    cna = tmp_path / "log2cna.txt"
    cna.write_text("Hugo_Symbol\tTCGA-SM-0000-01\tTCGA-SM-0001-01\nMYC\t0.73\t0\n")
    _one_line_error(_run("--scores", scores, "--cna", str(cna), "--out", str(tmp_path / "o")),
                    "log2cna.txt", "MYC", "-2..2")  # fmt: skip
    _one_line_error(_run("--scores", scores, "--cbioportal", str(sim.folder), "--de-method",
                         "deseq2", "--out", str(tmp_path / "o")), "data_mrna_seq_v2_rsem.txt",
                    "needs raw counts", "linear values")  # fmt: skip
    notes = tmp_path / "notes.txt"
    notes.write_text("Hugo_Symbol\tTCGA-SM-0000-01\nA\tlots\n")
    _one_line_error(_run("--scores", scores, "--expression", str(notes), "--out",
                         str(tmp_path / "o")), "notes.txt", "line 2", "not a number")  # fmt: skip


# --- the cBioPortal clinical file as a cohort table --------------------------------------------

CBIO_PATIENTS = (
    "#Patient Identifier\tOverall Survival Status\tOverall Survival (Months)\tStage\n"
    "#Patient identifier\tOverall survival status\tOverall survival in months\tStage\n"
    "#STRING\tSTRING\tNUMBER\tSTRING\n"
    "#1\t1\t1\t1\n"
    "PATIENT_ID\tOS_STATUS\tOS_MONTHS\tAJCC_PATHOLOGIC_TUMOR_STAGE\n"
    "TCGA-AA-0001\t1:DECEASED\t17.97\tSTAGE II\n"
    "TCGA-AA-0002\t0:LIVING\t63.01\t[Not Available]\n"
    "TCGA-AA-0003\t1:DECEASED\t5.5\tSTAGE IV\n"
)


def test_a_cbioportal_clinical_file_reads_as_a_cohort(tmp_path):
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.data.tables import Columns

    path = tmp_path / "data_clinical_patient.txt"
    path.write_text(CBIO_PATIENTS)
    cohort = read_cohort(path, Columns("PATIENT_ID", time="OS_MONTHS", event="OS_STATUS"), "months")
    assert cohort.patient_ids == ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"]
    np.testing.assert_array_equal(cohort.event, [1, 0, 1])
    np.testing.assert_array_equal(cohort.time, [17.97, 63.01, 5.5])
    assert cohort.time_unit == "months"
    stage = cohort.patients["AJCC_PATHOLOGIC_TUMOR_STAGE"]
    assert stage.iloc[0] == "STAGE II" and pd.isna(stage.iloc[1])  # TCGA's missing marker


def test_a_status_that_is_not_0_or_1_coded_is_still_refused(tmp_path):
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.data.tables import Columns

    path = tmp_path / "data_clinical_patient.txt"
    path.write_text(CBIO_PATIENTS.replace("0:LIVING", "2:LOST"))
    with pytest.raises(InputError, match="OS_STATUS"):
        read_cohort(path, Columns("PATIENT_ID", time="OS_MONTHS", event="OS_STATUS"), "months")
