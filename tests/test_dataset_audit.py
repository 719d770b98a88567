"""``medaudit audit --dataset ... --predictions ...`` on tiny dataset replicas with a written predictions file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit.datasets import join_predictions, load_dataset, parse_dataset, target_frame
from medaudit.audit.multitarget import audit_dataset
from medaudit.audit.pipeline import AuditConfig
from medaudit.cli import main
from medaudit.data.cxr import CHEXPERT_LABELS
from medaudit.errors import InputError
from test_cxr_readers import _chexpert, _img, _nih, _openi

FAST = ["--encoder-opt", "image.size=64", "--encoder-opt", "image.weights=null", "--n-components", "4"]
FAST += ["--n-slices", "2", "--pca", "8"]


def _mimic_n(tmp_path: Path, n_studies: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """A MIMIC-CXR-JPG replica (reader-test layout) with 2 images per study and varied labels/reports."""
    rng = np.random.default_rng(seed)
    root, reports = tmp_path / "mimic-cxr-jpg", tmp_path / "mimic-cxr-reports"
    meta, lab = [], []
    for k in range(n_studies):
        s, t = 10000000 + k, 50000000 + k
        labels = dict.fromkeys(CHEXPERT_LABELS, np.nan)
        labels["Edema"] = [1.0, 0.0, -1.0, np.nan][k % 4]
        labels["Cardiomegaly"] = float(k % 3 == 0)
        lab.append({"subject_id": s, "study_id": t, **labels})
        text = ["Mild pulmonary edema.", "No acute process.", "Possible edema.", "Heart size normal."][k % 4]
        p = reports / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{t}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"FINAL REPORT\n FINDINGS: {text} {'Cardiomegaly.' if k % 3 == 0 else ''}\n")
        for v, view in enumerate(["PA", "LATERAL"]):
            d = f"d{k:03d}{v}"
            meta.append({"dicom_id": d, "subject_id": s, "study_id": t, "ViewPosition": view})
            _img(root / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg", int(rng.integers(1e6)))
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    pd.DataFrame(lab).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    return root, reports


def _predictions(root: Path, path: Path, extra: list[str] = (), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ids = sorted(p.stem for p in (root / "files").rglob("*.jpg"))[:-2]  # 2 images without a prediction
    ids += list(extra)  # prediction rows that match no image
    df = pd.DataFrame({"dicom_id": ids, "Edema": rng.random(len(ids)), "cardiomegaly": rng.random(len(ids))})
    df.to_csv(path, index=False)
    return path


def _run(argv: list[str]) -> int:
    return main(["audit", *argv, "--cache-dir", str(Path(argv[argv.index("--out") + 1]).parent / "cache")])


def test_dataset_all_targets_end_to_end(tmp_path, capsys):
    root, reports = _mimic_n(tmp_path)
    pred = _predictions(root, tmp_path / "pred.csv", extra=["nope1", "nope2", "nope3"])
    out = tmp_path / "out"
    args = ["--dataset", f"mimic-cxr:{root}", "--dataset-reports", str(reports), "--predictions", str(pred)]
    rc = _run([*args, "--target", "all", "--uncertain", "ignore", "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (
        "3 prediction rows matched no image" in captured.out and "2 images have no prediction" in captured.out
    )
    assert "pred.csv: 3 prediction rows matched no image of the dataset and are not audited" in captured.err
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["join"]["unjoined_predictions"] == 3 and summary["join"]["images_without_prediction"] == 2
    assert set(summary["findings"]) == {"edema", "cardiomegaly"}
    # uncertain edema studies (k % 4 == 2, 4 studies x 2 images) are dropped by 'ignore'
    assert summary["findings"]["edema"]["dropped"]["uncertain label (ignored)"] == 8
    assert summary["findings"]["edema"]["cases"] == 30 - 8
    for f in ("edema", "cardiomegaly"):
        s = json.loads((out / f / "slices.json").read_text())
        assert s["counts"]["cases"] == summary["findings"][f]["cases"]
        assert (out / f / "report.html").is_file()
    index = (out / "index.html").read_text()
    assert "edema/report.html" in index and "cardiomegaly/report.html" in index
    assert summary["skipped"]["no_finding"] == "no predictions column"
    assert not list((tmp_path / "cache").glob(".shared-embeddings-*"))  # memory-mapped arrays removed


def test_uncertain_policies_and_shared_embeddings(tmp_path):
    root, reports = _mimic_n(tmp_path, n_studies=8)
    pred = _predictions(root, tmp_path / "pred.csv")
    joined = join_predictions(load_dataset(parse_dataset(f"mimic-cxr:{root}"), reports), pred)
    sizes = {u: len(target_frame(joined, "edema", u)[0]) for u in ("zeros", "ones", "ignore")}
    assert sizes["zeros"] == sizes["ones"] == 14 and sizes["ignore"] == 10
    zeros, ones = target_frame(joined, "edema", "zeros")[0], target_frame(joined, "edema", "ones")[0]
    assert ones["label"].sum() - zeros["label"].sum() == 4  # the uncertain images flip to positive
    cfg = AuditConfig(
        n_slices=2, n_components=4, pca=4, cache_dir=tmp_path / "cache", modalities=("report", "metadata")
    )
    res = audit_dataset(joined, ["edema", "Cardiomegaly"], cfg, tmp_path / "o", uncertain="ignore")
    assert set(res.results) == {"edema", "cardiomegaly"}
    e, c = res.results["edema"], res.results["cardiomegaly"]
    assert len(e.table) == 10 and len(c.table) == 14
    # cardiomegaly's audit sees every joined row; edema's the same rows minus the uncertain ones
    assert set(e.table.ids) < set(c.table.ids)


def test_target_all_skips_a_finding_without_labels(tmp_path):
    root, reports = _mimic_n(tmp_path, n_studies=8)
    pred = pd.read_csv(_predictions(root, tmp_path / "pred.csv"))
    pred["Fracture"] = 0.3  # no image has a fracture label (all blank)
    pred.to_csv(tmp_path / "pred2.csv", index=False)
    joined = join_predictions(
        load_dataset(parse_dataset(f"mimic-cxr:{root}"), reports), tmp_path / "pred2.csv"
    )
    cfg = AuditConfig(n_slices=2, n_components=4, pca=4, cache_dir=tmp_path / "cache", modalities=("report",))
    with pytest.warns(UserWarning, match="fracture"):
        res = audit_dataset(joined, "all", cfg, tmp_path / "o")
    assert "fracture" in res.skipped and "no label" in res.skipped["fracture"]
    assert set(res.results) == {"edema", "cardiomegaly"}
    with pytest.raises(InputError, match="fracture"):
        audit_dataset(joined, "fracture", cfg, tmp_path / "o2")


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ({"image_name": ["d0000"], "edema": [0.2]}, r"pred\.csv: no id column"),
        ({"dicom_id": ["d0000"], "tumour": [0.2]}, r"pred\.csv: column 'tumour' is not a finding"),
        (
            {"dicom_id": ["d0000", "d0001"], "edema": [0.2, 1.7]},
            r"pred\.csv: column 'edema' row 2: probability 1\.7 is not in \[0, 1\]$",
        ),
        ({"dicom_id": ["d0000", "d0001"], "edema": [0.2, "high"]}, r"column 'edema' row 2"),
        ({"dicom_id": ["d0000", "d0001", "d0000"], "edema": [0.2, 0.3, 0.4]}, r"row 3: duplicate id 'd0000'"),
        ({"dicom_id": ["x", "y"], "edema": [0.2, 0.3]}, r"no prediction row matches"),
    ],
)
def test_bad_predictions_table(tmp_path, capsys, rows, match):
    root, reports = _mimic_n(tmp_path, n_studies=2)
    pd.DataFrame(rows).to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "out"
    args = ["--dataset", f"mimic-cxr:{root}", "--dataset-reports", str(reports)]
    rc = _run([*args, "--predictions", str(tmp_path / "pred.csv"), "--target", "all", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    import re

    assert re.search(match, err), err
    assert not out.exists()


def test_bad_dataset_root_named(tmp_path, capsys):
    root, _reports = _mimic_n(tmp_path, n_studies=2)
    (root / "mimic-cxr-2.0.0-chexpert.csv").unlink()
    pred = _predictions(root, tmp_path / "pred.csv")
    rc = _run(["--dataset", f"mimic-cxr:{root}", "--predictions", str(pred), "--target", "all",
               "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "mimic-cxr-2.0.0-chexpert.csv" in err and str(root) in err
    rc = _run(["--dataset", "nih:" + str(tmp_path / "absent"), "--predictions", str(pred), "--target", "all",
               "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 2 and "absent" in capsys.readouterr().err
    rc = _run(["--dataset", "padchest:/x", "--predictions", str(pred), "--target", "all",
               "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 2 and "unknown dataset 'padchest'" in capsys.readouterr().err


def test_chexpert_and_nih_keys_and_image_paths(tmp_path):
    cx = _chexpert(tmp_path / "cx")
    train = pd.read_csv(cx / "train.csv")
    pd.DataFrame({"Path": train["Path"], "Cardiomegaly": [0.9, 0.1, 0.5]}).to_csv(
        tmp_path / "p1.csv", index=False
    )
    j = join_predictions(load_dataset(parse_dataset(f"chexpert:{cx}")), tmp_path / "p1.csv")
    assert j.report.n_joined == 3 and j.report.key_kind == "Path"
    assert j.df["prob__cardiomegaly"].tolist() == [0.9, 0.1, 0.5]
    nih = _nih(tmp_path / "nih")
    pd.DataFrame(
        {"Image Index": ["00000001_000.png", "00000002_000.png"], "prob_effusion": [0.2, 0.7]}
    ).to_csv(tmp_path / "p2.csv", index=False)
    j = join_predictions(load_dataset(parse_dataset(f"nih:{nih}")), tmp_path / "p2.csv")
    assert j.report.n_joined == 2 and j.report.images_without_prediction == 1 and j.predicted == ["effusion"]
    rel = [str(p.relative_to(tmp_path)) for p in sorted(nih.rglob("*.png"))]
    pd.DataFrame({"image": rel, "effusion": [0.1, 0.2, 0.3]}).to_csv(tmp_path / "p3.csv", index=False)
    j = join_predictions(load_dataset(parse_dataset(f"nih:{nih}")), tmp_path / "p3.csv")
    assert j.report.n_joined == 3 and j.report.key_kind == "image path"


def test_interrupted_run_resumes_with_same_outputs(tmp_path, monkeypatch):
    import functools

    import medaudit.audit.encoders as encoders_pkg
    from medaudit.audit.encoders import cache as cache_mod

    root, reports = _mimic_n(tmp_path, n_studies=6)
    pred = _predictions(root, tmp_path / "pred.csv")
    joined = join_predictions(load_dataset(parse_dataset(f"mimic-cxr:{root}"), reports), pred)
    monkeypatch.setattr(
        encoders_pkg, "encode_cached", functools.partial(cache_mod.encode_cached, batch_size=3)
    )

    def cfg(cache: str) -> AuditConfig:
        return AuditConfig(
            n_slices=2, n_components=4, pca=4, cache_dir=tmp_path / cache, modalities=("image", "report"),
            encoder_kwargs={"image": {"weights": None, "size": 32}},
        )  # fmt: skip

    ref = audit_dataset(joined, "all", cfg("cache-ref"), tmp_path / "ref")
    real = cache_mod._embedding_batches

    def interrupted(*a, **kw):
        for k, batch in enumerate(real(*a, **kw)):
            if k == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(cache_mod, "_embedding_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        audit_dataset(joined, "all", cfg("cache"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert len(list((tmp_path / "cache").rglob("shard-*.keys.parquet"))) == 2  # finished batches kept
    monkeypatch.setattr(cache_mod, "_embedding_batches", real)
    res = audit_dataset(joined, "all", cfg("cache"), tmp_path / "out")
    for f in ("edema", "cardiomegaly"):
        a = json.loads((ref.out_dir / f / "slices.json").read_text())
        b = json.loads((res.out_dir / f / "slices.json").read_text())
        for d in (a, b):
            d.pop("created")
            d["config"].pop("cache_dir")
        assert a == b
        pd.testing.assert_frame_equal(
            pd.read_parquet(ref.out_dir / f / "membership.parquet"),
            pd.read_parquet(res.out_dir / f / "membership.parquet"),
        )


def test_openi_with_images_and_reports(tmp_path):
    rep, imgs, meta_p = _openi(tmp_path)
    meta_p.rename(imgs / "nlmcxr_dicom_metadata.csv")
    ids = [f"CXR{n}_IM-0001-1001" for n in (1, 2, 3)]
    pd.DataFrame({"image_id": ids, "Cardiomegaly": [0.8, 0.1, 0.2]}).to_csv(tmp_path / "p.csv", index=False)
    ds = load_dataset(parse_dataset(f"openi:{imgs}"), reports=rep)
    j = join_predictions(ds, tmp_path / "p.csv")
    assert j.report.n_joined == 3 and j.predicted == ["cardiomegaly"]
    frame, _ = target_frame(j, "cardiomegaly", "zeros")
    assert frame["label"].tolist() == [1, 0, 0] and frame["report"].str.startswith("FINDINGS").all()
    assert set(j.meta) == {"sex", "age", "view_position", "frontal_lateral"}


def test_dataset_audit_refuses_a_bad_device_before_reading(tmp_path, capsys, monkeypatch):
    import medaudit.audit.datasets as datasets

    def never(*a, **k):
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(datasets, "load_dataset", never)
    root = tmp_path / "mimic"
    root.mkdir()
    out = tmp_path / "out"
    rc = _run(["--dataset", f"mimic-cxr:{root}", "--predictions", str(tmp_path / "p.csv"), "--target", "all",
               "--device", "tpu:7", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--device 'tpu:7'" in err, err
    assert not out.exists()


def test_image_that_cannot_be_decoded_names_its_row_in_the_dataset_table(tmp_path, capsys):
    """An image that exists (the reader's check) but cannot be decoded while embedding: one line naming
    the row of the metadata table that lists it, its id and the image (it used to name the image and id
    alone); ``--skip-bad`` skips it (it used to fail the same way): one warning, left out of every
    finding and modality, counted in each finding's ``skipped_reasons``."""
    root, reports = _mimic_n(tmp_path, n_studies=8)
    pred = _predictions(root, tmp_path / "pred.csv")
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv")
    bad = str(meta["dicom_id"].iloc[5])  # data row 6 of the metadata table
    img = next(root.rglob(f"{bad}.jpg"))
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    args = ["--dataset", f"mimic-cxr:{root}", "--dataset-reports", str(reports), "--predictions", str(pred)]
    args += ["--target", "all", *FAST, "--modalities", "image,report", "--encoder-opt", "image.size=32"]
    capsys.readouterr()
    assert _run([*args, "--out", str(tmp_path / "out")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert f"row 6 of {root / 'mimic-cxr-2.0.0-metadata.csv'} (id '{bad}')" in err[0]
    assert f"{bad}.jpg" in err[0] and "truncated" in err[0]
    assert not (tmp_path / "out").exists()

    out = tmp_path / "out2"
    assert _run([*args, "--skip-bad", "--out", str(out)]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "cannot be decoded" in ln]
    assert len(warned) == 1 and "1 image(s) of the dataset cannot be decoded" in warned[0]
    assert f"row 6 of {root / 'mimic-cxr-2.0.0-metadata.csv'} (id '{bad}')" in warned[0]
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["unreadable_images"] == 1 and summary["embedded_rows"] == 13
    for f in ("edema", "cardiomegaly"):
        s = json.loads((out / f / "slices.json").read_text())
        assert s["counts"]["skipped_reasons"] == {"unreadable image": 1}
        assert s["counts"]["cases"] == 13 and summary["findings"][f]["skipped_rows"] == 1
        assert bad not in set(pd.read_parquet(out / f / "membership.parquet")["id"])


def test_chexpert_image_that_cannot_be_decoded_names_its_row_in_valid_csv(tmp_path):
    """train.csv and valid.csv are combined: a truncated image listed in valid.csv's first data row is
    'row 1 of valid.csv' (not row 4 of the combined table); ``--skip-bad`` leaves its row out."""
    from medaudit.audit.multitarget import shared_embeddings

    root = _chexpert(tmp_path)
    valid = pd.read_csv(root / "train.csv").iloc[[0]].copy()
    valid["Path"] = "CheXpert-v1.0-small/valid/patient00099/study1/view1_frontal.jpg"
    img = _img(tmp_path / valid["Path"].iloc[0], 9)
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    valid.to_csv(root / "valid.csv", index=False)
    paths = [*pd.read_csv(root / "train.csv")["Path"], valid["Path"].iloc[0]]
    pd.DataFrame({"Path": paths, "Cardiomegaly": [0.9, 0.1, 0.5, 0.3]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    joined = join_predictions(load_dataset(parse_dataset(f"chexpert:{root}")), tmp_path / "p.csv")
    kw = {"image": {"weights": None, "size": 32}}
    cfg = AuditConfig(cache_dir=tmp_path / "cache", modalities=("image", "metadata"), encoder_kwargs=kw)
    with pytest.raises(InputError) as err:
        shared_embeddings(joined, cfg, ("image", "metadata"))
    msg = str(err.value)
    assert msg.startswith(f"row 1 of {root / 'valid.csv'} (id 'patient00099/study1/view1_frontal'): "), msg
    assert "view1_frontal.jpg" in msg and "truncated" in msg
    with pytest.warns(
        UserWarning, match=r"1 image\(s\) of the dataset cannot be decoded.*row 1 of .*valid\.csv"
    ):
        embs, ids = shared_embeddings(
            joined, cfg.model_copy(update={"skip_bad": True}), ("image", "metadata")
        )
    assert "patient00099/study1/view1_frontal" not in ids and len(ids) == 3
    assert embs["image"].shape[0] == embs["metadata"].shape[0] == 3


def test_images_with_an_empty_dataset_report_are_left_out_and_counted(tmp_path, capsys):
    """About 40 Open-i images have no report text in the dataset itself; the default audit (report
    modality) stopped at the first ('empty report', row 29) instead of leaving them out and counting them."""
    root, reports = _mimic_n(tmp_path)
    for p in reports.rglob("s50000000.txt"):  # study 0: its two images have an empty report
        p.write_text("")
    pred = _predictions(root, tmp_path / "pred.csv")
    out = tmp_path / "out"
    args = ["--dataset", f"mimic-cxr:{root}", "--dataset-reports", str(reports), "--predictions", str(pred)]
    rc = _run([*args, "--target", "cardiomegaly", "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2 of 30 joined images have an empty report in the dataset (e.g. 'd0000')" in captured.err
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["empty_reports"] == 2 and summary["findings"]["cardiomegaly"]["cases"] == 28
    assert "report" in summary["modalities"]


def test_every_dataset_report_empty_with_the_report_modality_is_refused(tmp_path, capsys):
    root, reports = _mimic_n(tmp_path, n_studies=8)
    for p in reports.rglob("*.txt"):
        p.write_text("")
    pred = _predictions(root, tmp_path / "pred.csv")
    out = tmp_path / "out"
    args = ["--dataset", f"mimic-cxr:{root}", "--dataset-reports", str(reports), "--predictions", str(pred)]
    rc = _run([*args, "--target", "cardiomegaly", "--out", str(out), "--modalities", "report", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "every one of the 14 joined images has an empty report" in err, err
    assert not out.exists()


def test_findings_share_one_concept_extraction(tmp_path, monkeypatch):
    """`--target all` extracts the reports' concepts once (like the embeddings), and each finding's
    rule search sees the same concept codes a separate audit of its rows would."""
    import medaudit.audit.rule_audit as ra

    root, reports = _mimic_n(tmp_path, n_studies=8)
    pred = _predictions(root, tmp_path / "pred.csv")
    joined = join_predictions(load_dataset(parse_dataset(f"mimic-cxr:{root}"), reports), pred)
    calls: list[int] = []
    real = ra.report_concepts

    def counting(reports_, *a, **k):
        calls.append(len(reports_))
        return real(reports_, *a, **k)

    monkeypatch.setattr(ra, "report_concepts", counting)
    cfg = AuditConfig(
        n_slices=2, n_components=4, pca=4, cache_dir=tmp_path / "cache", modalities=("report", "metadata"),
        rule_min_support=1,
    )  # fmt: skip
    res = audit_dataset(joined, ["edema", "Cardiomegaly"], cfg, tmp_path / "o", uncertain="ignore")
    assert calls == [14]  # once, over every embedded row; not once per finding
    for finding, r in res.results.items():
        own, _ = real(r.table.df["report"].tolist(), qualified=True, min_reports=1)
        got = json.loads((r.out_dir / "slices.json").read_text())["concepts"]["mentioned"]
        mentioned = {c: n for c, n in got.items() if n}
        assert mentioned == {c: int((own[c] == 1).sum()) for c in own.columns if (own[c] == 1).any()}, finding


def test_too_few_joined_cases_are_named_with_the_predictions_file(tmp_path, capsys):
    """One joined row failed in the shared report encoder ('tfidf-svd: need at least 2 reports to fit'),
    naming neither the predictions file nor the count."""
    root, reports = _mimic_n(tmp_path, n_studies=4)
    pred = tmp_path / "pred.csv"
    first = sorted(p.stem for p in (root / "files").rglob("*.jpg"))[0]
    pd.DataFrame({"dicom_id": [first, "nope"], "Edema": [0.3, 0.6]}).to_csv(pred, index=False)
    out = tmp_path / "out"
    args = ["--dataset", f"mimic-cxr:{root}", "--dataset-reports", str(reports), "--predictions", str(pred)]
    rc = _run([*args, "--target", "edema", "--out", str(out), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.splitlines()[-1] == (
        f"error: {pred}: 1 of its 2 predictions joined the dataset's cases (by dicom_id); at least 4 are "
        "needed to audit"
    )
    assert not out.exists()
