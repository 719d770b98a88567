"""The failure-scenario benchmark: a small end-to-end regression guard, resume, aggregation, CLI parsing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.errors import InputError
from medaudit.peers import peers_dir
from medaudit.stats import bootstrap_ci
from medaudit.studies.cxr_slices import benchmark as bm


def synth_cohort(n: int = 900, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A cohort whose image features carry the label differently on lateral views.

    Trained on a split where lateral positives are rare, a linear head learns the frontal direction only
    and misses cardiomegaly on laterals: the rare-slice failure. Reports mention the label and view,
    metadata hold the view.
    """
    rng = np.random.default_rng(seed)
    lateral = rng.random(n) < 0.3
    y = rng.random(n) < 0.35
    df = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "image": [f"/nonexistent/c{i}.png" for i in range(n)],
            "report": [""] * n,
            "cardiomegaly": y.astype(float),
            "no_finding": (~y).astype(float),
            "view_position": np.where(lateral, "LATERAL", "PA"),
            "age": rng.integers(20, 90, n).astype(float),
        }
    )
    a, yf = lateral.astype(float), y.astype(float)
    img = (
        np.c_[yf * (1 - a) * 2.5, yf * a * 2.5, a * 2, rng.normal(size=(n, 13))]
        + rng.normal(size=(n, 16)) * 0.7
    )
    rep = np.c_[yf * 2, a * 2, rng.normal(size=(n, 10))] + rng.normal(size=(n, 12)) * 0.5
    meta = np.c_[a * 2, rng.normal(size=n)] + rng.normal(size=(n, 2)) * 0.3
    emb = {"image": img, "report": rep, "metadata": meta}
    return df, {k: v.astype(np.float32) for k, v in emb.items()}


SMALL = bm.BenchConfig(
    scenarios=("rare",),
    slice_shares=(0.10,),
    n_runs=2,
    scenario_params={"rare": {"n_train": 400, "n_test": 200}},
    variants=(("metadata",), ("image", "report", "metadata")),
    fusions=("concat", "balanced"),
    slicer_params={**bm.STUDY_SLICER, "n_mixture_components": 10, "n_pca_components": 16},
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    df, emb = synth_cohort()
    out = tmp_path_factory.mktemp("bench")
    summary = bm.run_benchmark(SMALL, out, cohort=df, embeddings=emb, kind="table", n_boot=200)
    return df, emb, out, summary


def test_small_benchmark_finds_planted_slice(small_run):
    _, _, out, summary = small_run
    assert summary["runs_kept"] == 2 and summary["n_run_now"] == 2
    for f in (
        "runs.parquet",
        "results.csv",
        "results.parquet",
        "precision.png",
        "summary.md",
        "summary.html",
    ):
        assert (out / f).is_file(), f
    res = pd.read_csv(out / "results.csv")
    assert set(res["variant"]) == {"metadata", "image+report+metadata"}
    assert set(res["fusion"]) == {"none", "concat", "balanced"}
    runs = pd.read_parquet(out / "runs.parquet")
    base = runs.drop_duplicates("key")["baseline_slice"].mean()
    # the planted slice (cardiomegaly on laterals) is found far above the error-share baseline
    for _, r in res.iterrows():
        assert r["p10_dcbench"] >= min(1.0, base + 0.3), r.to_dict()
        assert r["p10_dcbench_lo"] <= r["p10_dcbench"] <= r["p10_dcbench_hi"]
    meta = res[res["variant"] == "metadata"].iloc[0]
    assert meta["p10_study"] > 0.8
    html = (out / "summary.html").read_text()
    assert "<script" not in html and "Failure-scenario benchmark" in html


def test_rows_record_scenario_and_gap(small_run):
    _, _, out, _ = small_run
    runs = pd.read_parquet(out / "runs.parquet")
    per_run = runs.drop_duplicates("key")
    assert (per_run["gap"] >= 0.10).all() and per_run["kept"].all()
    assert (per_run["n_slice"] == (0.10 * per_run["n_test"]).round()).all()
    # 1 unimodal fit + 2 fusions of the three-modality variant per run
    assert len(runs) == 2 * 3
    assert runs.loc[runs["variant"] == "metadata", "eta2_image"].isna().all()
    assert (
        runs.loc[runs["n_modalities"] == 3, ["eta2_image", "eta2_report", "eta2_metadata"]]
        .notna()
        .all()
        .all()
    )
    shares = ["var_share_image", "var_share_report", "var_share_metadata"]
    bal = runs.loc[runs["fusion"] == "balanced", shares].to_numpy()
    np.testing.assert_allclose(bal, 1 / 3, atol=1e-4)  # balanced fusion: every modality the same say
    cat = runs.loc[runs["fusion"] == "concat", shares].to_numpy()
    np.testing.assert_allclose(cat.sum(axis=1), 1.0, atol=1e-6)
    assert (cat[:, 0] > cat[:, 2]).all()  # concatenation: the wide image block outweighs 2-d metadata


def test_resume_skips_finished_runs(small_run):
    df, emb, out, _ = small_run
    again = bm.run_benchmark(SMALL, out, cohort=df, embeddings=emb, kind="table", n_boot=200)
    assert again["n_run_now"] == 0 and again["n_cached"] == 2
    a = pd.read_parquet(out / "runs.parquet").drop(columns=["fit_s", "train_s"])
    victim = sorted((out / "runs").glob("*.parquet"))[0]
    victim.unlink()
    third = bm.run_benchmark(SMALL, out, cohort=df, embeddings=emb, kind="table", n_boot=200)
    assert third["n_run_now"] == 1
    b = pd.read_parquet(out / "runs.parquet").drop(columns=["fit_s", "train_s"])
    pd.testing.assert_frame_equal(a, b)  # rerunning a run reproduces it exactly (deterministic)
    assert not list((out / "runs").glob(".*.tmp"))


def test_task_keys_depend_on_config():
    t1 = bm.make_tasks(SMALL, "table", "fp")
    t2 = bm.make_tasks(SMALL, "table", "fp")
    assert [t.key for t in t1] == [t.key for t in t2] and len({t.key for t in t1}) == 2
    other = bm.BenchConfig(**{**SMALL.__dict__, "min_gap": 0.2})
    assert {t.key for t in bm.make_tasks(other, "table", "fp")}.isdisjoint({t.key for t in t1})
    more = bm.BenchConfig(**{**SMALL.__dict__, "n_runs": 3})
    assert {t.key for t in t1} < {t.key for t in bm.make_tasks(more, "table", "fp")}
    assert {t.key for t in bm.make_tasks(SMALL, "table", "other-cohort")}.isdisjoint({t.key for t in t1})


def test_discarded_runs_are_recorded(tmp_path):
    df, emb = synth_cohort(600, seed=1)
    cfg = bm.BenchConfig(**{**SMALL.__dict__, "n_runs": 1, "min_gap": 1.01})
    s = bm.run_benchmark(cfg, tmp_path, cohort=df, embeddings=emb, kind="table", n_boot=50)
    assert s["runs_kept"] == 0 and s["discarded"][0]["discarded"] == 1
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(runs) == 1 and not runs["kept"].iloc[0]
    assert "0 kept / 1 runs" in (tmp_path / "summary.md").read_text()


def test_modality_eta2_finds_the_driving_modality():
    rng = np.random.default_rng(0)
    assign = rng.integers(0, 3, 400)
    driven = np.eye(3)[assign] * 3 + rng.normal(size=(400, 3))
    noise = rng.normal(size=(400, 50))
    eta = bm.modality_eta2(assign, {"a": driven, "b": noise})
    assert eta["a"] > 0.6 and eta["b"] < 0.05


def test_aggregate_matches_bootstrap():
    rows = []
    for i, v in enumerate([0.2, 0.4, 0.9, 0.5]):
        for s in range(2):  # slicer seeds are averaged within a run first
            rows.append(
                {"key": f"k{i}", "scenario": "noisy", "variant": "image", "fusion": "none", "slicer_config": "study",
                 "method": "medaudit", "kept": True, "slicer_seed": s, "p10_study": v + (0.1 if s else -0.1),
                 "p25_study": v, "p10_dcbench": v, "p25_dcbench": v, "baseline": 0.1, "baseline_slice": 0.1}
            )  # fmt: skip
    runs = pd.DataFrame(rows)
    res = bm.aggregate(runs, n_boot=300)
    assert len(res) == 1 and res["n_runs"].iloc[0] == 4
    mean, lo, hi = bootstrap_ci(np.array([0.2, 0.4, 0.9, 0.5]), n_boot=300, seed=0)
    assert res["p10_study"].iloc[0] == pytest.approx(mean)
    assert (res["p10_study_lo"].iloc[0], res["p10_study_hi"].iloc[0]) == pytest.approx((lo, hi))
    st = bm.stability(runs)
    assert st["p10_study_seed_range"].iloc[0] == pytest.approx(0.2)


def test_cli_parsing_errors():
    assert bm._parse_sets(["spurious.corr=0.6", "rare.task=opacity", "rare.n_train=300"]) == {
        "spurious": {"corr": 0.6},
        "rare": {"task": "opacity", "n_train": 300},
    }
    with pytest.raises(InputError, match="no parameter 'bogus'"):
        bm._parse_sets(["rare.bogus=1"])
    with pytest.raises(InputError, match=r"SCENARIO\.PARAM=VALUE"):
        bm._parse_sets(["corr=0.6"])
    assert bm._parse_variants("image,report+metadata") == (("image",), ("report", "metadata"))
    with pytest.raises(InputError, match="variant 'xray'"):
        bm._parse_variants("xray")
    with pytest.raises(InputError, match="not found"):
        bm.load_cohort("/nonexistent/cohort.csv", Path("/tmp"))


def test_embed_cohort_real_encoders_cached(tmp_path):
    """Report (TF-IDF + SVD) and metadata (tabular) encoders on a case table; the second call hits the cache."""
    df, _ = synth_cohort(500, seed=2)
    csv = tmp_path / "cohort.csv"
    words = np.where(df["view_position"] == "LATERAL", "lateral view", "frontal view")
    df["report"] = [f"{w} {'enlarged heart' if y else 'normal heart'} case {i % 7}" for i, (w, y) in
                    enumerate(zip(words, df["cardiomegaly"], strict=True))]  # fmt: skip
    df.to_csv(csv, index=False)
    emb_dir = tmp_path / "cache"
    real = bm.embed_cohort(
        df, emb_dir, modalities=("report", "metadata"), encoder_params={"report": {"dim": 8}}
    )
    assert real["report"].shape == (500, 8) and real["metadata"].shape[0] == 500
    again = bm.embed_cohort(df, emb_dir, modalities=("report",), encoder_params={"report": {"dim": 8}})
    np.testing.assert_array_equal(again["report"], real["report"])


@pytest.mark.skipif(
    not os.path.isfile("/tmp/medaudit-peers/domino-venv/.ok") or peers_dir() is None,
    reason="Domino 0.1.5 peer environment not built, or no peers folder beside the repository",
)
def test_domino_peer_row(tmp_path):
    df, emb = synth_cohort(600, seed=3)
    cfg = bm.BenchConfig(**{**SMALL.__dict__, "n_runs": 1, "peer_domino": True, "variants": (("metadata",),),
                            "peer_variants": ("metadata",)})  # fmt: skip
    bm.run_benchmark(cfg, tmp_path, cohort=df, embeddings=emb, kind="table", n_boot=50)
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    peer = runs[runs["method"] == "domino-0.1.5"]
    assert len(peer) == 1
    assert "error" not in peer.columns or peer["error"].isna().all()
    assert peer["p10_dcbench"].iloc[0] > 0.5
