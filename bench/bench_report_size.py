"""Benchmark: size, render time and browser load time of the slice-browser report at MIMIC-CXR scale.

A synthetic audit result with 377,110 cases (the number of images in MIMIC-CXR-JPG 2.x), built from
real parts where they exist:

* ids shaped like MIMIC ``dicom_id`` (44 characters), labels, probabilities and predictions drawn under
  the seed (error rate about 15%);
* reports: real Open-i reports from the phantom cohort, three joined per case (about 1,000 characters,
  close to a MIMIC report), drawn from a pool of 4,000 so that the table fits in memory;
* images: 64 phantom radiographs rendered at 224 px (``medaudit.data.phantom_render``), reused;
* metadata: the cohort's view, sex and age;
* five slices, either ``typical`` (60k/40k/25k/12k/5k members: 142k of 377k cases in a slice) or
  ``worst`` (every case a member of one slice: 5 x 75,422).

For each scenario it renders report.html with the default :class:`BrowserLimits` and records the file's
size and what it is made of, the render time and peak RSS, then opens it in headless Chromium (system
``/usr/bin/chromium`` via Playwright) ``--repeats`` times: time until the page is ready, time to open the
largest slice and page to its last member, and the JS heap.

Usage:
    python bench/bench_report_size.py --n 377110 --repeats 3 --out bench/results/report_size_377k
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# members per slice at 377,110 cases (scaled for other n); None: every case in one of 5 slices
SIZES = {"typical": [60_000, 40_000, 25_000, 12_000, 5_000], "worst": None}
MIMIC_N = 377_110


def synthetic_table(n: int, work: Path, seed: int = 0) -> Any:
    """A CaseTable of n cases (see the module docstring)."""
    from PIL import Image

    from medaudit.audit.table import CaseTable
    from medaudit.data.phantom_cxr import cohort_table
    from medaudit.data.phantom_render import render_case

    rng = np.random.default_rng(seed)
    cached = work / "cohort_cases.parquet"
    if cached.is_file():
        cohort = pd.read_parquet(cached)
    else:
        cohort = cohort_table(work / "cohort", seed=seed)
        cohort.to_parquet(cached)
    imgs = []
    for i, row in enumerate(cohort.sample(64, random_state=seed).to_dict(orient="records")):
        p = work / f"img{i}.png"
        Image.fromarray(render_case(row, size=224, seed=seed)).save(p)
        imgs.append(str(p))
    texts = cohort["report"].tolist()
    pool = [" ".join(rng.choice(texts, 3)) for _ in range(4000)]
    label = rng.integers(0, 2, n)
    err = rng.random(n) < 0.15
    pred = np.where(err, 1 - label, label)
    prob = np.clip(np.where(pred == 1, 0.5 + rng.random(n) / 2, rng.random(n) / 2), 0, 1)
    hexs = rng.integers(0, 2**32, size=(n, 5), dtype=np.uint64)
    ids = ["-".join(f"{int(x):08x}" for x in h) for h in hexs]
    df = pd.DataFrame(
        {
            "id": ids,
            "label": label,
            "prob": prob,
            "pred": pred,
            "image": [imgs[i % 64] for i in range(n)],
            "report": [pool[i % 4000] for i in range(n)],
        }
    )
    src = cohort.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    meta = src[["view_position", "sex", "age"]]
    return CaseTable(df=df, meta=meta, has_image=True, has_report=True)


def synthetic_scores(n: int, sizes: list[int] | None, seed: int = 0) -> np.ndarray:
    """Membership scores: slice j has sizes[j] members (score > 0.5), disjoint; None = all cases, 5 ways."""
    rng = np.random.default_rng(seed + 1)
    k = 5
    if sizes is None:
        sizes = [n // k + (1 if j < n % k else 0) for j in range(k)]
    else:
        sizes = [round(m * n / MIMIC_N) for m in sizes]
    scores = rng.random((n, k)) * 0.45
    order = rng.permutation(n)
    at = 0
    for j, m in enumerate(sizes):
        scores[order[at : at + m], j] = 0.5 + 0.5 * rng.random(m)
        at += m
    return scores


def synthetic_payload(table: Any, scores: np.ndarray) -> dict[str, Any]:
    """slices.json content, from the pipeline's own slice summary (no TF-IDF: n-grams added by hand)."""
    from medaudit.audit.pipeline import AuditConfig, _slice_summary

    cfg = AuditConfig(meta=list(table.meta.columns))
    slices = []
    for j in range(scores.shape[1]):
        s = _slice_summary(j, scores, table, cfg, None)
        s["explanation"]["reference"] = "correctly classified cases of the same label"
        s["explanation"]["ngrams"] = [
            {"ngram": g, "diff": 0.01, "direction": "over", "slice_doc_frac": 0.5, "reference_doc_frac": 0.2}
            for g in ("effusion", "pleural effusion", "cardiomegaly")
        ]
        slices.append(s)
    err = table.errors
    return {
        "config": cfg.to_dict(),
        "modalities": ["image", "report", "metadata"],
        "embedding_dims": {"image": 1280, "report": 128, "metadata": 7},
        "fused_dim": 1415,
        "counts": {
            "cases": len(table),
            "skipped_rows": 0,
            "skipped_reasons": {},
            "errors": int(err.sum()),
            "error_rate": float(err.mean()),
            "positives": int(table.df["label"].sum()),
            "predicted_positives": int(table.df["pred"].sum()),
        },
        "membership_rule": "a case is a member of a slice when its membership score is > 0.5",
        "source": None,
        "slices": slices,
    }


def composition(html: str) -> dict[str, int]:
    """Bytes of the page by part: data block (cases, reports, thumbnails, slices), figures, the rest."""
    m = re.search(r'<script type="application/json" id="audit-data">(.*?)</script>', html, re.S)
    assert m is not None
    data = json.loads(m.group(1))
    part = {
        k: len(json.dumps(data[k], ensure_ascii=False).encode())
        for k in ("cases", "reports", "thumbs", "slices")
    }
    figs = sum(len(x) for x in re.findall(r'src="data:image/png;base64,[^"]*"', html))
    return {
        "total": len(html.encode()),
        "data_block": len(m.group(1).encode()),
        **{f"data_{k}": v for k, v in part.items()},
        "figures": figs,
        "n_reports": len(data["reports"]),
        "n_thumbs": len(data["thumbs"]),
        "n_member_rows": sum(len(s["rows"]) for s in data["slices"]),
    }


def browse(html: Path, rank: int, repeats: int) -> dict[str, Any]:
    """Median time to ready, and to open slice ``rank`` and page to its last member, in Chromium."""
    from playwright.sync_api import sync_playwright

    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
    ]
    ready, last, heap, errors = [], [], [], []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        for _ in range(repeats):
            pg = b.new_page()
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            t0 = time.perf_counter()
            pg.goto(html.as_uri(), timeout=300_000)
            pg.wait_for_selector("body[data-ready='1']", timeout=300_000)
            ready.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            pg.click(f"#slice-table tr[data-rank='{rank}'] a")
            pg.click(f"#slice-{rank} .pager .last")
            pg.wait_for_selector(f"#slice-{rank} .pager .last:disabled")
            last.append(time.perf_counter() - t1)
            heap.append(pg.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null"))
            pg.close()
        b.close()
    return {
        "ready_s_median": statistics.median(ready),
        "ready_s": ready,
        "open_and_last_page_s_median": statistics.median(last),
        "open_and_last_page_s": last,
        "js_heap_bytes_median": statistics.median([h for h in heap if h] or [0]),
        "console_errors": errors,
    }


def run(n: int, scenario: str, repeats: int, work: Path, table: Any) -> dict[str, Any]:
    from medaudit.report.audit_report import render_audit_report

    scores = synthetic_scores(n, SIZES[scenario])
    payload = synthetic_payload(table, scores)
    emb = np.random.default_rng(2).standard_normal((n, 16)).astype(np.float32)
    t0 = time.perf_counter()
    html = render_audit_report(payload, table, scores, emb)
    render_s = time.perf_counter() - t0
    path = work / f"report_{scenario}.html"
    path.write_text(html, encoding="utf-8")
    rank = max(payload["slices"], key=lambda s: s["size"])["rank"]
    return {
        "scenario": scenario,
        "slice_sizes": [s["size"] for s in payload["slices"]],
        "render_s": render_s,
        "bytes": composition(html),
        "browser": browse(path, rank, repeats) if repeats else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=377_110)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenarios", nargs="+", default=["typical", "worst"], choices=sorted(SIZES))
    ap.add_argument("--out", type=Path, default=Path("bench/results/report_size_377k"))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    a = ap.parse_args(argv)
    from medaudit.report.slice_browser import BrowserLimits

    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        table = synthetic_table(a.n, work)
        build_s = time.perf_counter() - t0
        results = [run(a.n, s, a.repeats, work, table) for s in a.scenarios]
    out = {
        "n_cases": a.n,
        "limits": BrowserLimits().__dict__,
        "table_build_s": build_s,
        "mean_report_chars": float(table.df["report"].str.len().mean()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "results": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
