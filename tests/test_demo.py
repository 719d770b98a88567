"""`medaudit demo` end to end at a small size: cohort, baked-in failure, classifier, audit, report."""

from __future__ import annotations

import json

import pytest

from medaudit.cli import main
from medaudit.errors import InputError
from medaudit.outdir import MARKER
from medaudit.studies.cxr_slices.demo import run_demo


def test_demo_quick_end_to_end_and_deterministic(tmp_path, capsys):
    cache = tmp_path / "cache"
    res = run_demo(tmp_path / "out", cache, seed=0, quick=True, quiet=True)
    for f in ("report.html", "slices.json", "membership.parquet", "demo.json"):
        assert (res.out_dir / f).is_file(), f
    html = (res.out_dir / "report.html").read_text()
    assert "<script>alert" not in html
    summ = json.loads((res.out_dir / "demo.json").read_text())
    fig = summ["figures"]
    # the figures are recomputed here from what the demo wrote: the audited cases (with the planted slice)
    # and the membership scores, so a wiring error in the demo's metrics shows
    import numpy as np
    import pandas as pd

    from medaudit.studies.cxr_slices.metrics import error_share_baseline, precision_at_k_dcbench

    cases = pd.read_parquet(res.out_dir / "cases.parquet")
    mem = pd.read_parquet(res.out_dir / "membership.parquet").set_index("id").loc[cases["id"].astype(str)]
    mem = mem[[c for c in mem.columns if c.startswith("slice_")]]
    gt = cases["in_baked_slice"].to_numpy(dtype=bool)
    assert gt.sum() == round(0.2 * len(cases))
    assert fig["precision_at_10_dcbench"] == pytest.approx(precision_at_k_dcbench(mem.to_numpy(), gt, 10))
    probs = cases["prob"].to_numpy(dtype=float)
    assert fig["baseline_error_share"] == pytest.approx(
        error_share_baseline(gt, cases["label"].to_numpy(), probs)
    )
    top = np.argsort(-mem.iloc[:, 0].to_numpy(), kind="stable")[:10]
    assert fig["top_slice_precision_at_10"] == pytest.approx(gt[top].mean())
    assert summ["scenario"]["train_corr_label_attr"] == pytest.approx(0.7, abs=0.1)
    assert summ["n_test"] == 100 and summ["scenario"]["test_slice_share"] == pytest.approx(0.2)
    assert summ["rank_by"] == "excess_errors" and summ["views"] == "frontal"
    slices = json.loads((res.out_dir / "slices.json").read_text())["slices"]
    # one ranked list (--slicer both): ascending evidence of the members' errors, small slices last
    keys = [(s["size"] < 10, s["evidence"]["log10_p"]) for s in slices]
    assert keys == sorted(keys) and summ["slicer"] == "both"
    best = summ["best_matching_slice"]
    assert best["family"] in ("mixture", "rules") and isinstance(best["rule"], str) and best["rule"]
    # the CLI entry point, on the same (now warm) cache and the same folder, replaces it with the same
    # figures: demo.json and cases.parquet are published with the audit, and listed as medaudit's (a
    # rerun into the folder was refused: "holds 'cases.parquet', which medaudit did not write")
    assert {"demo.json", "cases.parquet"} <= set(json.loads((res.out_dir / MARKER).read_text())["files"])
    rc = main(["demo", "--quick", "--out", str(tmp_path / "out"), "--cache-dir", str(cache)])
    assert rc == 0
    summ2 = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert summ2["figures"] == fig
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]  # no staging, lock or old folder
    err = capsys.readouterr()
    assert "precision@10" in err.err + err.out


def test_demo_rejects_tiny_n(tmp_path):
    assert main(["demo", "--n", "10", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]) == 2
    with pytest.raises(InputError):
        run_demo(tmp_path / "o", tmp_path / "c", n=60, quick=True, quiet=True, corr=0.99, n_train=5000)
    with pytest.raises(InputError, match="views"):
        run_demo(tmp_path / "o", tmp_path / "c", quick=True, quiet=True, views="side")


def _toy_images(n: int = 48, size: int = 32, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 0.3, (n, size, size)).astype("float32")
    x[y == 1, 10:20, 10:20] += 0.6  # a visible square marks the positives
    return x, y


def test_classifier_deterministic_learns_and_roundtrips(tmp_path):
    import numpy as np

    from medaudit.studies.cxr_slices.classifier import CNNClassifier, train_cnn, train_head

    x, y = _toy_images()
    kw = {"image_size": 32, "epochs": 6, "batch_size": 16, "width": 8, "random_state": 3, "progress": False}
    a = train_cnn(x, y, **kw)
    b = train_cnn(x, y, **kw)
    pa, pb = a.predict_proba(x), b.predict_proba(x)
    assert pa.shape == (48, 2) and np.allclose(pa.sum(1), 1)
    np.testing.assert_allclose(pa, pb, atol=1e-6)
    xt, yt = _toy_images(seed=1)
    assert (a.predict(xt) == yt).mean() >= 0.9
    a.save(tmp_path / "clf")
    c = CNNClassifier.load(tmp_path / "clf")
    np.testing.assert_allclose(c.predict_proba(xt), a.predict_proba(xt), atol=1e-6)
    with pytest.raises(InputError, match="both classes"):
        train_cnn(x, np.zeros(48, int), **kw)
    feats = x.reshape(48, -1)[:, ::8]
    for kind in ("logistic", "mlp"):
        h1 = train_head(feats, y, kind=kind, random_state=0, max_iter=300)
        h2 = train_head(feats, y, kind=kind, random_state=0, max_iter=300)
        np.testing.assert_allclose(h1.predict_proba(feats), h2.predict_proba(feats))
        assert (h1.predict(feats) == y).mean() >= 0.9
    with pytest.raises(InputError, match="head kind"):
        train_head(feats, y, kind="forest")
