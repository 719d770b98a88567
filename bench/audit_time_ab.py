"""Wall time of one real-report audit (``bench/heldout_real_reports.py``'s case: report + metadata,
default slicer) under two source trees, interleaved ABAB in fresh processes, medians.

    python bench/audit_time_ab.py --a /path/to/old/src --b src --repeats 3 \\
        --failure "left basal atelectasis" --seed 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

_ONE = """
import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, {bench!r})
import heldout_real_reports as H
f = [x for x in H.FAILURES if x.name == {failure!r}][0]
df = H.load_table()
t, gt = H.make_case(df, H.group_mask(df, f), {seed}, 1000, {bg}, {grp})
with tempfile.TemporaryDirectory() as td:
    t0 = time.perf_counter()
    H.run_medaudit(t, {seed}, Path(td))
    print(time.perf_counter() - t0)
"""


def _once(src: str, args: argparse.Namespace) -> float:
    code = _ONE.format(
        bench=str(Path(__file__).resolve().parent), failure=args.failure, seed=args.seed,
        bg=args.bg_error, grp=args.group_error,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "MEDAUDIT_QUIET": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="src folder A (e.g. a git worktree of the old commit)")
    ap.add_argument("--b", required=True, help="src folder B")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--failure", default="left basal atelectasis")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bg-error", type=float, default=0.10)
    ap.add_argument("--group-error", type=float, default=0.70)
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(args.repeats):
        for k in ("a", "b"):
            times[k].append(_once(getattr(args, k), args))
    ma, mb = statistics.median(times["a"]), statistics.median(times["b"])
    print(
        f"A {ma:.2f} s {[round(x, 2) for x in times['a']]}; B {mb:.2f} s {[round(x, 2) for x in times['b']]}; B/A {mb / ma:.2f}"
    )


if __name__ == "__main__":
    main()
