"""report.html in headless Chromium: the slices are shown and report text stays inert (escaped)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.audit.pipeline import AuditConfig, run_audit
from medaudit.audit.table import ColumnMap

CHROMIUM = Path("/usr/bin/chromium")
PAYLOAD = "<script>document.title='pwned'</script>"

# CI installs Debian's chromium and sets MEDAUDIT_REQUIRE_BROWSER=1, so there a missing browser fails
# the run instead of skipping this test silently.
_REQUIRED = os.environ.get("MEDAUDIT_REQUIRE_BROWSER") == "1"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and not _REQUIRED, reason="needs /usr/bin/chromium"),
]


def _table(folder: Path, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = i % 2
        err = (i % 5) == 0
        pred = 1 - label if err else label
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
        rows.append(
            {
                "id": f"case{i}",
                "label": label,
                "prob": 0.8 if pred else 0.2,
                "image": f"{i}.png",
                # every report carries the payload, so every exemplar excerpt shows it
                "report": f"Finding {rng.choice(['effusion', 'edema', 'nodule'])}. {PAYLOAD} No pneumothorax.",
                "site": PAYLOAD if i % 3 == 0 else "A",
            }
        )
    return pd.DataFrame(rows)


def _dump_dom(html: Path, profile: Path) -> str:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=2000",
        "--dump-dom",
        html.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_report_renders_and_report_text_is_inert(tmp_path: Path) -> None:
    (tmp_path / "cases").mkdir()
    df = _table(tmp_path / "cases")
    df.to_csv(tmp_path / "cases" / "cases.csv", index=False)
    cfg = AuditConfig(
        columns=ColumnMap(),
        meta=["site"],
        modalities=("image", "report"),
        encoder_kwargs={"image": {"weights": None, "size": 32}},
        n_slices=3,
        n_components=4,
        pca=8,
        cache_dir=tmp_path / "cache",
    )
    res = run_audit(tmp_path / "cases" / "cases.csv", cfg, tmp_path / "out")
    raw = res.paths["report"].read_text()
    assert PAYLOAD not in raw and "&lt;script&gt;" in raw

    dom = _dump_dom(res.paths["report"], tmp_path / "profile")
    assert "<title>medaudit audit report</title>" in dom  # the payload did not run
    assert "pwned</title>" not in dom
    assert "<script" not in dom.lower()  # no script element was created from report text
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    for s in res.slices:
        assert f'id="slice-{s["rank"]}"' in dom
        assert f"Slice {s['rank']}:" in dom
    assert dom.count('class="slice-row"') == len(res.slices)
    assert dom.count("data:image/png;base64,") >= 2 + 1  # bar chart, map, thumbnails
