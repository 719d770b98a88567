"""Cost of qualified concept extraction against plain extraction on the 3,927 Open-i reports with
text, interleaved ABAB (``--repeats`` pairs), medians.

    python bench/qualifier_cost.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from medaudit.audit.concepts import extract_concepts
from medaudit.data.cxr.openi import load_openi_reports


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rep = load_openi_reports()
    texts = [t for t in rep["report"].fillna("") if t.strip()]
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for qualified in (False, True):
            t0 = time.perf_counter()
            extract_concepts(texts, qualified=qualified)
            times[qualified].append(time.perf_counter() - t0)
    plain, qual = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"{len(texts)} reports, medians of {args.repeats} interleaved runs: plain {plain:.2f} s "
        f"({len(texts) / plain:.0f} reports/s), qualified {qual:.2f} s ({len(texts) / qual:.0f} reports/s), "
        f"ratio {qual / plain:.2f}"
    )


if __name__ == "__main__":
    main()
