"""One cohort of ``bench/heldout_real_reports.py`` looked at closely: the concept predicates that cover at
least half of the planted group (their size, group members and errors), then the audit's top slices
with their rules and how many group members each holds.

    python bench/heldout_case_probe.py "calcinosis/aorta" --seed 0 [--bg-error 0.15 --group-error 0.4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import heldout_real_reports as H
from medaudit.audit.pipeline import AuditConfig, run_audit
from medaudit.audit.rule_audit import report_concepts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("failure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--bg-error", type=float, default=0.15)
    ap.add_argument("--group-error", type=float, default=0.4)
    ap.add_argument("--top", type=int, default=5)
    a = ap.parse_args()
    f = next(x for x in H.FAILURES if x.name == a.failure)
    df = H.load_table()
    t, gt = H.make_case(df, H.group_mask(df, f), a.seed, a.n, a.bg_error, a.group_error)
    err = (t["prob"].to_numpy() >= 0.5).astype(int) != t["label"].to_numpy()
    print(f"group {gt.sum()}, its errors {(gt & err).sum()}, all errors {err.sum()} ({err.mean():.2f})")
    codes, _ = report_concepts(t["report"], qualified=True, min_reports=10)
    for c in codes.columns:
        m = codes[c].to_numpy() == 1
        if m.sum() >= 10 and (m & gt).sum() >= 0.5 * gt.sum():
            print(
                f"  {c:45s} reports {m.sum():4d}  in group {(m & gt).sum():3d}  errors {(m & err).sum():3d}"
            )
    group_ids = set(t["id"].astype(str)[gt])
    with tempfile.TemporaryDirectory() as td:
        cfg = AuditConfig(meta=H.META, modalities=("report", "metadata"), seed=a.seed, write_report=False)
        cfg.cache_dir = Path(td) / "cache"
        run_audit(t.drop(columns=["image"], errors="ignore"), cfg, Path(td) / "audit")
        slices = json.loads((Path(td) / "audit" / "slices.json").read_text())["slices"]
    for s in slices[: a.top]:
        rule = s["explanation"].get("rule") or {}
        inside = len(set(s.get("member_ids", [])) & group_ids)
        print(
            f"  #{s.get('rank')} {s.get('family')}: {rule.get('text')}  size {s.get('size')}, "
            f"error rate {s.get('error_rate', 0):.2f}, group members {inside}"
        )


if __name__ == "__main__":
    main()
