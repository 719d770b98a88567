"""The phantom cohort: real report-derived table, deterministic cached rendering, visible findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medaudit.data import phantom_cxr
from medaudit.data.phantom_cxr import LABEL_COLUMNS, METADATA_COLUMNS, build_cohort, cohort_table
from medaudit.data.phantom_render import render_case
from medaudit.errors import InputError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("phantom")


def test_table_is_real_openi(cache):
    df = cohort_table(cache, seed=0, image_size=64)
    assert len(df) == 3927  # the Open-i reports with FINDINGS or IMPRESSION text
    assert df["id"].is_unique
    assert set(LABEL_COLUMNS) <= set(df.columns) and set(METADATA_COLUMNS) <= set(df.columns)
    assert set(df["view_position"]) == {"PA", "AP", "LATERAL"}
    assert (df["report"].str.len() > 0).all()
    assert df["support_devices"].sum() > 250 and df["cardiomegaly"].sum() > 300
    # labels agree with the text: every cardiomegaly case mentions the heart or carries the MeSH term
    row = df[df["id"] == "openi-CXR1000"].iloc[0]
    assert row["opacity"] == 1 and row["atelectasis"] == 1 and "opacity" in row["report"].lower()
    again = cohort_table(cache, seed=0, image_size=64)  # from the parquet cache
    assert again.drop(columns="image").equals(df.drop(columns="image"))


def test_build_deterministic_and_resumable(cache, tmp_path, monkeypatch):
    df = build_cohort(cache, n=10, image_size=64, seed=0, progress=False)
    assert len(df) == 10
    first = {p: Path(p).read_bytes() for p in df["image"]}
    other = build_cohort(tmp_path / "other", n=10, image_size=64, seed=0, progress=False)
    assert [Path(p).read_bytes() for p in other["image"]] == list(first.values())

    # interrupted build: the renderer fails after 3 images; only whole images are left behind
    for p in other["image"]:
        import os

        os.unlink(p)
    calls = {"n": 0}
    import medaudit.data.phantom_render as pr

    orig = pr.render_case

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return orig(*a, **k)

    monkeypatch.setattr(pr, "render_case", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_cohort(tmp_path / "other", n=10, image_size=64, seed=0, progress=False)
    folder = tmp_path / "other" / phantom_cxr.cohort_dir("x", 64, 0).name
    left = sorted(folder.rglob("*"))
    pngs = [p for p in left if p.suffix == ".png"]
    assert len(pngs) == 3 and not any(".render-" in str(p) for p in left)
    monkeypatch.setattr(pr, "render_case", orig)
    resumed = build_cohort(tmp_path / "other", n=10, image_size=64, seed=0, progress=False)
    assert [Path(p).read_bytes() for p in resumed["image"]] == list(first.values())
    with pytest.raises(InputError, match="image_size"):
        build_cohort(cache, n=2, image_size=16)
    with pytest.raises(InputError, match="not in the phantom cohort"):
        build_cohort(cache, ids=["nope"], image_size=64)


def _mean(case: dict, k: int = 6, size: int = 96) -> np.ndarray:
    return np.mean(
        [render_case({**case, "render_seed": s}, size=size).astype(float) for s in range(k)], axis=0
    )


def test_findings_are_visible():
    size = 96
    normal = _mean({"view_position": "PA"})
    cardio = _mean({"view_position": "PA", "cardiomegaly": 1})
    # enlarged heart: the band beside the heart (lower lung, lateral to a normal silhouette) gets denser
    band = (slice(int(0.55 * size), int(0.7 * size)), slice(int(0.66 * size), int(0.76 * size)))
    assert cardio[band].mean() > normal[band].mean() + 5
    devices = [
        render_case(
            {"view_position": "PA", "support_devices": 1, "device_kinds": "pacemaker", "render_seed": s}, size
        )
        for s in range(6)
    ]
    plain = [render_case({"view_position": "PA", "render_seed": s}, size) for s in range(6)]
    top = (slice(0, int(0.3 * size)), slice(int(0.6 * size), size))
    assert (
        np.mean([(d[top] > 235).sum() for d in devices]) > np.mean([(p[top] > 235).sum() for p in plain]) + 10
    )
    eff = _mean({"view_position": "PA", "pleural_effusion": 1, "pleural_effusion_side": "both"})
    base = (slice(int(0.62 * size), int(0.76 * size)), slice(int(0.12 * size), int(0.3 * size)))
    assert eff[base].mean() > normal[base].mean() + 3
    lat = _mean({"view_position": "LATERAL"})
    assert np.abs(lat - normal).mean() > 20  # a distinct geometry
    a = render_case({"view_position": "AP", "render_seed": 1}, size)
    assert (a[: int(0.12 * size)] > 235).sum() > 10  # portable marker
    assert np.array_equal(
        render_case({"view_position": "PA", "render_seed": 3}, size),
        render_case({"view_position": "PA", "render_seed": 3}, size),
    )
    assert not np.array_equal(
        render_case({"view_position": "PA", "render_seed": 3}, size),
        render_case({"view_position": "PA", "render_seed": 4}, size),
    )
