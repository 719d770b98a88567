"""Do side/site/severity-qualified concepts name the human MeSH subheading groups of Open-i better
than the plain concepts?

For every Open-i MeSH major tag with a subheading (``Pulmonary Atelectasis/base/left``) carried by at
least ``--min-reports`` reports, the best single predicate and the best conjunction of two predicates
(by F1 against the tag's reports) are found among (a) the concept predicates (`report mentions X`) and
(b) the same plus the qualified ones (`report mentions X (left)`), each with at least 10 reports. The
tags are every subheading tag of the data, not a chosen few.

    python bench/qualified_concepts_vs_mesh.py --out bench/results/qualified_concepts_vs_mesh.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medaudit.audit.concepts import extract_concepts
from medaudit.data.cxr.openi import load_openi_reports
from medaudit.io import atomic_write_text


def _best(pred: np.ndarray, names: list[str], target: np.ndarray) -> tuple[float, str, float, float]:
    """Best F1 over single columns and pairwise conjunctions of ``pred`` (bool, n x p)."""
    x = pred.astype(np.float32)
    t = target.astype(np.float32)
    tp1 = t @ x
    sup1 = x.sum(0)
    f1 = 2 * tp1 / (sup1 + t.sum())
    j = int(np.argmax(f1))
    best = (float(f1[j]), names[j], float(tp1[j] / max(sup1[j], 1)), float(tp1[j] / t.sum()))
    # pairs among the 80 best single columns
    top = np.argsort(-f1)[:80]
    xt = x[:, top]
    sup2 = xt.T @ xt
    tp2 = (xt * t[:, None]).T @ xt
    ok = sup2 >= 10
    f2 = np.where(ok, 2 * tp2 / (sup2 + t.sum()), 0)
    a, b = np.unravel_index(int(np.argmax(f2)), f2.shape)
    if f2[a, b] > best[0]:
        sa, sb = top[a], top[b]
        best = (
            float(f2[a, b]),
            f"{names[sa]} ∧ {names[sb]}",
            float(tp2[a, b] / sup2[a, b]),
            float(tp2[a, b] / t.sum()),
        )
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--min-reports", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rep = load_openi_reports()
    rep = rep[rep["report"].fillna("").str.strip() != ""].reset_index(drop=True)
    t0 = time.perf_counter()
    codes = extract_concepts(rep["report"].tolist(), qualified=True)
    secs = time.perf_counter() - t0
    # the audit's concept predicates: mentioned (code 1) and uncertain (code 2), each in >= 10 reports
    mentioned = np.concatenate([(codes == 1).to_numpy(), (codes == 2).to_numpy()], axis=1)
    keep = mentioned.sum(0) >= 10
    names = [f"report mentions {c}" for c in codes.columns] + [
        f"report is uncertain about {c}" for c in codes.columns
    ]
    plain = np.array(["(" not in c for c in codes.columns] * 2) & keep
    both = keep
    tags: dict[str, np.ndarray] = {}
    for i, ms in enumerate(rep["mesh_major"]):
        for m in ms:
            if "/" in m:
                tags.setdefault(m.strip().lower(), np.zeros(len(rep), bool))[i] = True
    rows = []
    for tag, mask in sorted(tags.items()):
        if mask.sum() < args.min_reports:
            continue
        f_a, r_a, _, _ = _best(mentioned[:, plain], [n for n, k in zip(names, plain, strict=True) if k], mask)
        f_b, r_b, p_b, c_b = _best(
            mentioned[:, both], [n for n, k in zip(names, both, strict=True) if k], mask
        )
        rows.append(
            {
                "tag": tag,
                "reports": int(mask.sum()),
                "f1_plain": f_a,
                "rule_plain": r_a,
                "f1_qualified": f_b,
                "rule_qualified": r_b,
                "precision_q": p_b,
                "recall_q": c_b,
            }
        )
    df = pd.DataFrame(rows)
    gain = df["f1_qualified"] - df["f1_plain"]
    lines = [
        "# Qualified concepts against Open-i's MeSH subheading tags",
        "",
        f"`python bench/qualified_concepts_vs_mesh.py --out ...`; {len(rep)} reports with text, "
        f"{len(df)} subheading tags with >= {args.min_reports} reports, extraction {secs:.1f} s "
        f"({codes.shape[1]} columns, {int(keep.sum())} with >= 10 reports).",
        "",
        f"Mean best F1: plain concepts {df['f1_plain'].mean():.3f}, with qualified concepts "
        f"{df['f1_qualified'].mean():.3f} (mean gain {gain.mean():+.3f}; median {gain.median():+.3f}; "
        f"better on {(gain > 0.01).sum()}, same on {(gain.abs() <= 0.01).sum()}, worse on {(gain < -0.01).sum()} tags).",
        "",
        "| MeSH tag | reports | best F1 plain | best plain rule | best F1 with qualifiers | best rule | precision | recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in df.sort_values("reports", ascending=False).itertuples():
        lines.append(
            f"| {r.tag} | {r.reports} | {r.f1_plain:.2f} | {r.rule_plain.replace('report mentions ', '')} | "
            f"{r.f1_qualified:.2f} | {r.rule_qualified.replace('report mentions ', '')} | {r.precision_q:.2f} | {r.recall_q:.2f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
