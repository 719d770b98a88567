"""The benchmark's output files: result tables (CSV/parquet), the precision plot and ``summary.md`` /
``summary.html``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medaudit.io import atomic_save, atomic_write_text
from medaudit.studies.cxr_slices.bench_config import BenchConfig
from medaudit.studies.cxr_slices.bench_plot import plot_results
from medaudit.studies.cxr_slices.bench_tables import (
    _fmt,
    aggregate,
    contributions,
    frame_to_markdown,
    hit_rates,
    markdown_table,
    stability,
)

_HTML = """{% extends "base.html" %}
{% block title %}medaudit bench-scenarios{% endblock %}
{% block body %}
<h1>Failure-scenario benchmark</h1>
<p class="muted">{{ runs_kept }} kept / {{ runs_total }} runs; precision@k mean [bootstrap 95% CI] over kept runs.</p>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
<img src="{{ plot }}" alt="precision plot" style="max-width:100%">
<h2>Results</h2>
<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Discarded runs (accuracy gap &lt; {{ min_gap }})</h2>
<table><tr><th>scenario</th><th>kept</th><th>discarded</th><th>mean gap</th></tr>
{% for r in discards %}<tr><td>{{ r.scenario }}</td><td>{{ r.kept }}</td><td>{{ r.discarded }}</td><td>{{ "%.3f"|format(r.gap) }}</td></tr>{% endfor %}
</table>
{% for t in extra %}<h2>{{ t.title }}</h2>
<table><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endfor %}
{% endblock %}
"""


_EXTRA_TITLES = (
    ("hit_rate", "Explanation hit rate (top slice's rule or top concept names the attribute)"),
    ("stability", "Slicer instability (spread of p@10 across slicer seeds, mean over runs)"),
    ("contributions", "Modality contribution: fused-variance share and eta² per fusion"),
)
_HTML_HEADER = ["scenario", "variant", "fusion", "slicer", "method", "runs", "p@10 study", "p@25 study",
                "p@10 dcbench", "p@25 dcbench", "hit", "baseline"]  # fmt: skip


def write_outputs(
    runs: pd.DataFrame, out: Path, config: BenchConfig, notes: Sequence[str] = (), n_boot: int = 1000
) -> dict[str, Any]:
    """Write results.csv/parquet, stability.csv, contributions.csv, plot and summaries (``runs.parquet`` is
    the run grid's result table, written by :class:`medaudit.rungrid.ResultStore`)."""
    results = aggregate(runs, n_boot=n_boot)
    frames = {
        "hit_rate": hit_rates(runs, n_boot=n_boot),
        "results": results,
        "results_by_share": aggregate(runs, n_boot=n_boot, by_share=True),
        "stability": stability(runs),
        "contributions": contributions(results),
    }
    for name, frame in frames.items():
        with atomic_save(out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_save(out / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    per_run = runs.drop_duplicates("key")
    summary = {
        "runs_kept": int(per_run["kept"].sum()),
        "runs_total": len(per_run),
        "discarded": _discards(per_run),
        "notes": list(notes),
    }
    extra = [(title, frames[name]) for name, title in _EXTRA_TITLES if not frames[name].empty]
    atomic_write_text(out / "summary.md", _summary_markdown(results, extra, summary, config))
    plot_uri = _plot_uri(results, out / "precision.png")
    atomic_write_text(out / "summary.html", _summary_html(results, extra, summary, config, plot_uri))
    return summary


def _discards(per_run: pd.DataFrame) -> list[dict[str, Any]]:
    """Per scenario: runs kept, runs discarded by the accuracy-gap rule, and the mean gap."""
    agg = per_run.groupby("scenario").agg(
        kept=("kept", "sum"), discarded=("kept", lambda s: int((~s).sum())), gap=("gap", "mean")
    )
    return agg.reset_index().to_dict("records")


def _plot_uri(results: pd.DataFrame, path: Path) -> str:
    """Write the precision plot and return it as a data URI (empty without results)."""
    if results.empty:
        return ""
    import base64

    plot_results(results, path)
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _summary_markdown(
    results: pd.DataFrame, extra: list[tuple[str, pd.DataFrame]], summary: dict[str, Any], config: BenchConfig
) -> str:
    md = [
        "# Failure-scenario benchmark\n",
        f"{summary['runs_kept']} kept / {summary['runs_total']} runs (min accuracy gap {config.min_gap}).\n",
        *[f"> {n}\n" for n in summary["notes"]],
        markdown_table(results),
    ]
    for title, frame in extra:
        md += [f"\n## {title}\n", frame_to_markdown(frame), "\n"]
    return "\n".join(md)


def _summary_html(
    results: pd.DataFrame,
    extra: list[tuple[str, pd.DataFrame]],
    summary: dict[str, Any],
    config: BenchConfig,
    plot_uri: str,
) -> str:
    from medaudit import __version__
    from medaudit.report.html import environment

    metrics = ("p10_study", "p25_study", "p10_dcbench", "p25_dcbench", "hit")
    keys = ("scenario", "variant", "fusion", "slicer_config", "method")
    rows = [
        [*(r[k] for k in keys), int(r["n_runs"]), *(_fmt(r, m) for m in metrics), f"{r['baseline']:.2f}"]
        for _, r in results.iterrows()
    ]
    return (
        environment()
        .from_string(_HTML)
        .render(
            version=__version__,
            notes=summary["notes"],
            plot=plot_uri,
            header=_HTML_HEADER,
            rows=rows,
            discards=summary["discarded"],
            min_gap=config.min_gap,
            runs_kept=summary["runs_kept"],
            runs_total=summary["runs_total"],
            extra=[
                {"title": t, "header": list(map(str, f.columns)), "rows": _html_rows(f)} for t, f in extra
            ],
        )
    )


def _html_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)
    ]
