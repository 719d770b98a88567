"""End to end: ``medaudit audit`` on a small table built here, and a planted-slice recovery test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.audit.outputs import read_membership, read_slices_json
from medaudit.audit.pipeline import AuditConfig, run_audit
from medaudit.audit.table import ColumnMap
from medaudit.cli import main

FINDINGS = [
    "mild cardiomegaly",
    "bibasilar atelectasis",
    "small left pleural effusion",
    "right lower lobe consolidation",
    "hyperinflated lungs",
    "calcified granuloma",
    "degenerative changes of the spine",
]
NEGATIVES = ["No pneumothorax.", "No focal consolidation.", "No pleural effusion.", "Lungs are clear."]


def make_cases(
    folder: Path,
    n: int = 300,
    slice_frac: float = 0.12,
    images: bool = True,
    seed: int = 0,
    extra_text: str = "",
) -> tuple[pd.DataFrame, np.ndarray]:
    """A simulated audit: errors concentrated on negatives whose report mentions a chest tube and whose
    view is mostly 'portable' (the planted slice, like the study's spurious-correlation scenario: the
    classifier learned "chest tube -> pneumothorax" and is confidently wrong there, 90% errors), plus
    4% scattered borderline errors elsewhere."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    label = (rng.random(n) < 0.5).astype(int)
    in_slice = np.zeros(n, dtype=bool)
    neg = np.flatnonzero(label == 0)
    in_slice[rng.choice(neg, round(slice_frac * n), replace=False)] = True
    rows = []
    for i in range(n):
        parts = [f"{f.capitalize()}." for f in rng.choice(FINDINGS, 2, replace=False)]
        parts += list(rng.choice(NEGATIVES, 2, replace=False))
        if label[i] == 1:
            parts.append("Moderate right apical pneumothorax.")
        if in_slice[i]:
            parts.append("Right chest tube in place.")
        rng.shuffle(parts)
        report = " ".join(parts) + extra_text
        view = (
            ("portable" if rng.random() < 0.9 else "PA")
            if in_slice[i]
            else rng.choice(["PA", "AP", "portable"], p=[0.5, 0.35, 0.15])
        )
        err = rng.random() < (0.9 if in_slice[i] else 0.04)
        pred = 1 - label[i] if err else label[i]
        # the spurious shortcut makes confident mistakes; other mistakes sit near the threshold
        if err and in_slice[i]:
            margin = 0.42 + rng.normal(0, 0.03)
        elif err:
            margin = 0.08 + abs(rng.normal(0, 0.05))
        else:
            margin = 0.3 + abs(rng.normal(0, 0.1))
        prob = float(np.clip(0.5 + (margin if pred else -margin), 0.01, 0.99))
        row = {
            "case": f"p{i:04d}",
            "truth": label[i],
            "score": prob,
            "text": report,
            "view": view,
            "sex": rng.choice(["F", "M"]),
            "age": int(rng.integers(20, 90)),
        }
        if images:
            arr = (rng.random((32, 32)) * (200 if label[i] else 120)).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"p{i:04d}.png")
            row["png"] = f"p{i:04d}.png"
        rows.append(row)
    return pd.DataFrame(rows), in_slice


def _cli(table: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(
        [
            "audit",
            "--table", str(table), "--out", str(out), "--cache-dir", str(cache),
            "--id-col", "case", "--label-col", "truth", "--prob-col", "score", "--image-col", "png", "--report-col", "text",
            "--meta", "view", "--meta", "sex,age", "--modalities", "image,report,metadata",
            "--n-slices", "3", "--n-components", "6", "--pca", "16", "--seed", "1",
            "--encoder-opt", "image.size=64", "--encoder-opt", "report.dim=16",
            *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cases")
    df, _ = make_cases(folder, n=40, seed=3)
    df.loc[5, "score"] = np.nan  # one bad row, skipped with --skip-bad
    p = folder / "cases.csv"
    df.to_csv(p, index=False)
    return p


def test_cli_audit_end_to_end(small_table: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "audit", tmp_path / "cache"
    # without --skip-bad the NaN probability fails: exit 2, no output folder, nothing staged
    assert _cli(small_table, out, cache) == 2
    assert not out.exists() and not any(p.name.startswith(".audit") for p in tmp_path.iterdir())

    assert _cli(small_table, out, cache, "--skip-bad") == 0
    data = read_slices_json(out / "slices.json")
    assert data["schema_version"] == "1.1"
    assert data["counts"]["cases"] == 39 and data["counts"]["skipped_rows"] == 1
    assert data["counts"]["skipped_reasons"] == {"bad probability": 1}
    assert data["config"]["n_slices"] == 3 and data["modalities"] == ["image", "report", "metadata"]
    assert len(data["slices"]) == 3 and [s["rank"] for s in data["slices"]] == [1, 2, 3]
    mem = read_membership(out / "membership.parquet")
    assert list(mem.columns) == ["id", "slice_1", "slice_2", "slice_3"] and len(mem) == 39
    assert "p0005" not in set(mem["id"])
    for s in data["slices"]:
        col = mem.set_index("id")[s["name"]]
        members = col[col > 0.5].sort_values(ascending=False, kind="mergesort")
        assert s["size"] == len(members)
        assert set(s["member_ids"]) == set(members.index)
        assert np.all(np.diff(col[s["member_ids"]].to_numpy()) <= 1e-12)  # best first
        if s["size"]:
            lo, hi = s["error_ci"]
            assert 0 <= lo <= s["error_rate"] <= hi <= 1
        assert len(s["exemplar_ids"]) == 8
        assert {"ngrams", "metadata", "basis"} <= set(s["explanation"])
    html = (out / "report.html").read_text()
    assert "Slice 1" in html and "data:image/png;base64," in html and "rows skipped" in html

    # a rerun reuses the embedding cache and is deterministic under the seed
    out2 = tmp_path / "audit2"
    assert _cli(small_table, out2, cache, "--skip-bad") == 0
    pd.testing.assert_frame_equal(read_membership(out2 / "membership.parquet"), mem)
    d2 = json.loads((out2 / "slices.json").read_text())
    assert [s["member_ids"] for s in d2["slices"]] == [s["member_ids"] for s in data["slices"]]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--meta", "nope"], "unknown column 'nope'"),
        (["--embeddings", "audio=x.npy"], "unknown modality 'audio'"),
        (["--n-components", "500", "--skip-bad"], "500"),
        (["--slicer", "nope", "--skip-bad"], "nope"),
        (["--encoder-opt", "image=3"], "MODALITY.KEY=VALUE"),
        (["--rank-by", "size", "--skip-bad"], "'size' is not one of"),
    ],
)
def test_cli_bad_input_exits_2_without_output(
    small_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "audit"
    assert _cli(small_table, out, tmp_path / "cache", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
    assert not out.exists()


def test_precomputed_embeddings_replace_encoder(small_table: Path, tmp_path: Path) -> None:
    df = pd.read_csv(small_table)
    rng = np.random.default_rng(0)
    emb = pd.DataFrame(rng.normal(size=(len(df), 5)), columns=[f"e{j}" for j in range(5)]).assign(
        id=df["case"]
    )
    emb.to_parquet(tmp_path / "img.parquet")
    cfg = AuditConfig(
        columns=ColumnMap(id="case", label="truth", prob="score", image="nonexistent", report="text"),
        modalities=("image", "report"),
        embeddings={"image": tmp_path / "img.parquet"},
        n_slices=2,
        n_components=4,
        pca=8,
        skip_bad=True,
        cache_dir=tmp_path / "cache",
        write_report=False,
    )
    res = run_audit(small_table, cfg, tmp_path / "out")
    assert res.payload["embedding_dims"]["image"] == 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".medaudit-output",
        "membership.parquet",
        "slices.json",
    ]


def test_planted_slice_is_found_and_explained(tmp_path: Path) -> None:
    df, gt = make_cases(tmp_path / "cases", n=300, images=False, seed=0)
    cfg = AuditConfig(
        columns=ColumnMap(id="case", label="truth", prob="score", image=None, report="text"),
        meta=["view", "sex", "age"],
        modalities=("report", "metadata"),
        n_slices=5,
        n_components=12,
        pca=32,
        seed=0,
        encoder_kwargs={"report": {"dim": 32}},
        cache_dir=tmp_path / "cache",
        write_report=False,
    )
    res = run_audit(df, cfg, tmp_path / "out")
    top = res.membership["slice_1"].to_numpy()
    top10 = np.argsort(-top, kind="stable")[:10]
    precision10 = gt[top10].mean()
    assert precision10 >= 0.9, precision10
    s1 = res.slices[0]
    over = [g["ngram"] for g in s1["explanation"]["ngrams"] if g["direction"] == "over"]
    assert any("chest tube" in g or g in ("chest", "tube") for g in over[:5]), over
    meta_over = [
        (m["column"], m["value"])
        for m in s1["explanation"]["metadata"]
        if m["direction"] == "over" and m["q_value"] < 0.05
    ]
    assert meta_over and meta_over[0] == ("view", "portable"), meta_over
    assert s1["error_rate"] > 0.6 > res.counts["error_rate"] * 3
    # the default ranking (excess errors) is recorded, and the slices are sorted by it
    assert res.payload["config"]["rank_by"] == "excess_errors"
    sc = [s["slicer_score"] for s in res.slices]
    assert sc == sorted(sc, reverse=True), sc


def test_old_flag_spellings_still_work_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from medaudit.cli import rewrite_deprecated

    argv = ["audit", "--table", "t.csv", "--cache", "c", "--label=truth", "--id", "case", "--out", "o"]
    with caplog.at_level("WARNING", logger="medaudit"):
        new = rewrite_deprecated(argv)
    assert new == [
        "audit",
        "--table",
        "t.csv",
        "--cache-dir",
        "c",
        "--label-col=truth",
        "--id-col",
        "case",
        "--out",
        "o",
    ]
    assert sum("deprecated" in r.message for r in caplog.records) == 3
    # other commands are left alone
    assert rewrite_deprecated(["texture", "train", "--label-col", "x"]) == [
        "texture",
        "train",
        "--label-col",
        "x",
    ]
