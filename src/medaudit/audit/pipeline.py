"""The audit pipeline: case table -> embeddings -> fusion -> slicer -> explanations -> outputs.

Python API::

    from medaudit.audit import AuditConfig, ColumnMap, run_audit

    cfg = AuditConfig(columns=ColumnMap(prob="score"), meta=["sex", "age"], cache_dir="cache")
    result = run_audit("cases.csv", cfg, "audit_out")
    result.slices[0]["error_rate"], result.membership.head()

Slice membership rule: a case is a *member* of a slice when its membership score for that slice is
greater than ``membership_threshold`` (0.5). A slice's ``size``, ``error_rate`` (with a Wilson 95%
interval), composition, explanations and ``member_ids`` use its members; ``soft_size`` and
``soft_error_rate`` weight every case by its score instead. A slice with no member is explained from its
``n_exemplars`` highest-scoring cases (``explanation.basis = "top_k"``). A rule slice's members are the
cases its rule matches, scored worst-first (:func:`medaudit.audit.rule_audit.member_scores`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit import __version__
from medaudit.audit import explain, rule_audit
from medaudit.audit.concepts import Lexicon, load_lexicon
from medaudit.audit.config import DEFAULT_ENCODERS, AuditConfig, check_meta_columns
from medaudit.audit.embedding import check_encoders as _check_encoders
from medaudit.audit.embedding import encode_table as _encode_table
from medaudit.audit.outputs import (
    MEMBERSHIP_FILE,
    REPORT_FILE,
    SCHEMA_VERSION,
    SLICES_FILE,
    membership_frame,
    write_membership,
    write_slices_json,
)
from medaudit.audit.rule_audit import report_concepts
from medaudit.audit.summaries import case_counts, concept_summary, rule_search_summary
from medaudit.audit.summaries import slice_summary as _slice_summary
from medaudit.audit.table import CaseTable, ColumnMap, load_case_table, table_columns
from medaudit.errors import InputError
from medaudit.faults import fault_point
from medaudit.outdir import OutputClaim, claim_output
from medaudit.progress import make_progress

__all__ = ["DEFAULT_ENCODERS", "AuditConfig", "AuditResult", "run_audit"]

# AuditConfig fields -> ErrorAwareMixtureSlicer parameter names (passed when the slicer accepts them).
_SLICER_PARAMS = {
    "n_slices": "n_slices",
    "n_components": "n_mixture_components",
    "y_weight": "y_log_likelihood_weight",
    "y_hat_weight": "y_hat_log_likelihood_weight",
    "pca": "n_pca_components",
    "rank_by": "rank_by",
    "min_slice_size": "min_slice_size",
}


@dataclass
class AuditResult:
    """The outcome of :func:`run_audit`.

    Attributes:
        slices: one dict per slice in rank order (the ``slices`` entries of slices.json).
        membership: ``id`` + ``slice_1..slice_k`` membership scores.
        out_dir: the output folder.
        paths: ``slices_json``, ``membership``, ``report`` (when written).
        counts: the ``counts`` block of slices.json.
        embedding: the fused (n, d) embedding the slicer saw.
        table: the validated case table.
        payload: the content of slices.json.

    In a notebook the result shows as a compact table; ``to_frame()`` gives one row per slice and
    ``members(rank)`` the cases of one slice as a DataFrame.
    """

    slices: list[dict[str, Any]]
    membership: pd.DataFrame
    out_dir: Path
    paths: dict[str, Path]
    counts: dict[str, Any]
    embedding: np.ndarray
    table: CaseTable
    payload: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """One row per slice, indexed by rank (see :func:`medaudit.audit.result.slices_frame`)."""
        from medaudit.audit.result import slices_frame

        return slices_frame(self.slices)

    def members(self, slice_id: int | str, complement: bool = False) -> pd.DataFrame:
        """A slice's cases, best first, with scores, label, prediction, report and metadata."""
        from medaudit.audit.result import slice_members

        return slice_members(self, slice_id, complement=complement)

    def _repr_html_(self) -> str:
        from medaudit.audit.result import result_html

        return result_html(self)


def _make_slicer(config: AuditConfig, n_cases: int) -> Any:
    from medaudit.audit.slicers import get_slicer

    slicer = get_slicer(config.slicer)  # an unknown name is an InputError
    accepted = set(slicer.get_params(deep=False))
    params: dict[str, Any] = {}
    for attr, name in _SLICER_PARAMS.items():
        if name in accepted:
            params[name] = getattr(config, attr)
    if "random_state" in accepted:
        params["random_state"] = config.seed
    if "device" in accepted and config.device is not None:
        params["device"] = config.device
    for k, v in config.slicer_kwargs.items():
        if k not in accepted:
            raise InputError(
                f"slicer '{config.slicer}' has no parameter '{k}' (accepted: {', '.join(sorted(accepted))})"
            )
        params[k] = v
    need = max(int(params.get("n_mixture_components", 0) or 0), int(params.get("n_slices", 0) or 0), 2)
    if n_cases < need:
        raise InputError(
            f"{n_cases} cases, fewer than the slicer needs ({need}: n_slices={params.get('n_slices')}, "
            f"mixture components={params.get('n_mixture_components', '-')}); lower --n-components / --n-slices"
        )
    _check_confusion_init(slicer, params)
    from medaudit.audit.slicers.mixture import RANK_RULES

    if "rank_by" in params and params["rank_by"] not in RANK_RULES:  # fail before the slow encoding
        raise InputError(f"rank_by '{params['rank_by']}': choose one of {', '.join(RANK_RULES)}")
    slicer.set_params(**params)
    return slicer


def _check_confusion_init(slicer: Any, params: dict[str, Any]) -> None:
    """The mixture's confusion-matrix initialisation needs a component per (label, prediction) cell of
    the binary task: refuse fewer before any case is embedded, naming the flag."""
    init = params.get("init", getattr(slicer, "init", None))
    k = params.get("n_mixture_components")
    if init == "confusion" and isinstance(k, int) and k < 4:
        raise InputError(
            f"--n-components {k}: the mixture's confusion initialisation needs at least 4 components "
            "(2 labels x 2 predictions); use 4 or more, or slicer_kwargs init: kmeans in --config"
        )


_RANKING_NOTE = {
    "mixture": "the mixture slicer's rank_by rule",
    "kmeans": "the k-means slicer's order",
    "rules": "rule search order: each rule is the most significant on the cases not covered by "
    "the rules above it (eligible: exact one-sided binomial test against the overall error rate, "
    "Benjamini-Hochberg over every rule tried; ranked: Fisher's exact test of its members against "
    "the rest of their classes)",
    "both": "one list of mixture and rule slices ranked by the one-sided p-value of their members' "
    "errors against the rest of their classes (Fisher's exact test, stratified by class; "
    "evidence.p_value; size-aware: purity and size both count; a class-level failure is shown as "
    "per-class error rates, not as a slice; slices under the rule search's minimum support last); "
    "slices with member Jaccard >= merge_jaccard merged into one finding at the rank of the better one, "
    "shown as the rule slice when one is among them (the others linked)",
}


def _drop_reports(
    modalities: tuple[str, ...], audit_warnings: list[str], where: str = "reports"
) -> tuple[str, ...]:
    """Every report is empty: warn and go on with the other modalities (``where``: the table and column)."""
    rest = tuple(m for m in modalities if m != "report")
    if not rest:
        raise InputError(
            f"{where}: every report is empty and no other modality is selected (see --modalities)"
        )
    audit_warnings.append(f"every report is empty: the report modality is dropped; using {', '.join(rest)}")
    return rest


def _drop_absent_images(
    source: pd.DataFrame | str | os.PathLike[str],
    config: AuditConfig,
    modalities: tuple[str, ...],
    audit_warnings: list[str],
) -> tuple[str, ...]:
    """With the default modalities and the default image column, a table without that column (reports
    and metadata only) is audited without images, with a warning; a column the user named, or an image
    modality the user asked for, must exist (the table check names it)."""
    default_col = ColumnMap().image
    if config.modalities is not None or "image" not in modalities or "image" in config.embeddings:
        return modalities
    col = config.columns.image
    if col not in (default_col, None):
        return modalities
    cols = table_columns(source) if col else []
    if cols is None or (col and col in cols):
        return modalities
    rest = tuple(m for m in modalities if m != "image")
    audit_warnings.append(
        f"the table has no '{col or default_col}' column: auditing without images (modalities {', '.join(rest)}; "
        "--image-col names another column, --modalities chooses explicitly)"
    )
    rule_audit.warn(audit_warnings[-1])
    return rest


def _fit_mixture(
    slicer: Any,
    embs: dict[str, np.ndarray],
    config: AuditConfig,
    targets: np.ndarray,
    probs: np.ndarray,
    progress: Any,
) -> tuple[np.ndarray | None, np.ndarray, Any, Any]:
    """Fuse the embeddings and fit the embedding slicer: (fused, scores, slice errors, slice scores)."""
    if slicer is None:
        return None, np.zeros((len(targets), 0)), None, None
    task = progress.add_task("fuse + fit slicer", total=2)
    from medaudit.audit.fusion import fuse

    fused = fuse(
        embs,
        method=config.fusion,
        weights=config.fusion_weights,
        dim=config.fusion_dim,
        random_state=config.seed,
    )
    fused = np.asarray(fused, dtype=np.float32)
    progress.update(task, advance=1)
    slicer.fit(fused, targets, probs)
    scores = np.asarray(slicer.predict_proba(fused, targets, probs), dtype=np.float64)
    progress.update(task, advance=1)
    return fused, scores, getattr(slicer, "slice_error_", None), getattr(slicer, "slice_score_", None)


def _fit_rules(predicates: pd.DataFrame, config: AuditConfig, targets: np.ndarray, probs: np.ndarray) -> Any:
    from medaudit.audit.slicers.rules import RuleSlicer

    params: dict[str, Any] = {
        "n_slices": config.n_slices,
        "max_level": config.rule_max_level,
        "min_support": config.rule_min_support,
        "exploratory": config.rule_exploratory,
    }
    params.update({k: v for k, v in config.slicer_kwargs.items() if k in _rule_params()})
    rs = RuleSlicer(**params)
    return rs.fit(predicates, targets, probs)


def _add_rule_explanation(
    summary: dict[str, Any],
    s: np.ndarray,
    config: AuditConfig,
    predicates: pd.DataFrame | None,
    concepts: pd.DataFrame | None,
    rule: list[str] | None,
    family: str,
) -> None:
    """Lead the slice's explanation with its rule (or best-matching rule) and top concepts."""
    mask = s > config.membership_threshold
    if not mask.any():
        mask = np.zeros(len(s), dtype=bool)
        mask[explain.exemplars(s, k=config.n_exemplars)] = True
    desc = rule_audit.describe_slice(predicates, concepts, mask, rule, family)
    summary["family"] = family
    summary["explanation"] = {**desc, **summary["explanation"]}


def _rank_slices(
    slices: list[dict[str, Any]], scores: np.ndarray, table: CaseTable, config: AuditConfig, family: str
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Attach each slice's evidence; for ``both``, rank all slices on it and merge overlapping ones."""
    errors = table.errors
    masks = [scores[:, j] > config.membership_threshold for j in range(scores.shape[1])]
    for sl, m in zip(slices, masks, strict=True):
        sl["evidence"] = rule_audit.slice_evidence(m, errors, table.df["label"].to_numpy())
    order = list(range(len(slices)))
    linked: dict[int, list[tuple[int, float]]] = {i: [] for i in order}
    if family == "both":
        logp = [sl["evidence"]["log10_p"] for sl in slices]
        readable = [sl.get("family") == "rules" for sl in slices]
        order, linked = rule_audit.merge_ranked(
            masks, logp, config.merge_jaccard, readable, min_size=config.rule_min_support
        )
        order = order[: config.n_slices]
    out = []
    for rank, j in enumerate(order, start=1):
        sl = slices[j]
        sl["linked"] = [
            {
                "family": slices[i]["family"],
                "jaccard": jac,
                "size": slices[i]["size"],
                "error_rate": slices[i]["error_rate"],
                "headline": slices[i]["explanation"].get("headline", ""),
            }
            for i, jac in linked.get(j, [])
        ]
        sl["rank"], sl["name"] = rank, f"slice_{rank}"
        out.append(sl)
    return out, scores[:, order] if order else scores[:, :0]


def _explain_slices(
    scores: np.ndarray,
    families: list[str],
    table: CaseTable,
    config: AuditConfig,
    mixture_stats: tuple[Any, Any],
    rule_slicer: Any,
    predicates: pd.DataFrame | None,
    concepts: pd.DataFrame | None,
    progress: Any,
) -> list[dict[str, Any]]:
    """One summary per slice column of ``scores`` (mixture columns first, then rule columns)."""
    slicer_err, slicer_score = mixture_stats
    k = scores.shape[1]
    task = progress.add_task("explain slices", total=k)
    reports = [r if isinstance(r, str) else "" for r in table.df["report"].tolist()]
    tfidf = explain.ngram_tfidf(reports) if any(r.strip() for r in reports) else None
    slices = []
    n_mix = families.count("mixture")
    for j in range(k):
        rule = None
        if families[j] == "rules":
            r = j - n_mix
            se, ss = float(rule_slicer.slice_error_[r]), float(rule_slicer.slice_score_[r])
            rule = rule_slicer.rules_[r]
        else:
            se = float(slicer_err[j]) if slicer_err is not None and j < len(slicer_err) else None
            ss = float(slicer_score[j]) if slicer_score is not None and j < len(slicer_score) else None
        summary = _slice_summary(j, scores, table, config, se, tfidf, ss)
        _add_rule_explanation(summary, scores[:, j], config, predicates, concepts, rule, families[j])
        if rule is not None:
            summary["rule_qvalue"] = float(rule_slicer.slice_qvalue_[j - n_mix])
            summary["rule_significant"] = bool(rule_slicer.slice_significant_[j - n_mix])
            summary["search_penalty_log10"] = float(rule_slicer.slice_search_penalty_[j - n_mix])
        slices.append(summary)
        progress.update(task, advance=1)
    return slices


def _load_table(
    source: pd.DataFrame | str | os.PathLike[str],
    config: AuditConfig,
    modalities: tuple[str, ...],
    min_cases: int,
    audit_warnings: list[str],
    family: str = "mixture",
) -> tuple[CaseTable, tuple[str, ...]]:
    """Validate the table. Reports are checked strictly (an empty report or an unreadable report file
    names its row) when they are used, by the report modality or by the rule search (``rules``/``both``),
    and some are non-empty; when every report is empty the report modality is dropped with a warning
    (the audit goes on without it; the rule search then uses the other predicates)."""
    modalities = _drop_absent_images(source, config, modalities, audit_warnings)
    require = tuple(m for m in modalities if m not in config.embeddings and m != "report")
    if config.meta and "metadata" not in require:
        # the metadata columns are checked (one blank in every row is refused) whatever the slicer and
        # the modalities: the rule search and the enrichment tests use them as the encoder does
        require = (*require, "metadata")
    kw: dict[str, Any] = {"skip_bad": config.skip_bad, "threshold": config.threshold}
    # first pass without the report and size checks, so that row errors keep their usual order
    table = load_case_table(source, config.columns, config.meta, require=require, min_cases=0, **kw)
    embed_text = "report" in modalities and "report" not in config.embeddings
    too_few = len(table) < min_cases  # the second pass names that alone (no vacuous 'every report is empty')
    if (embed_text or family in ("rules", "both")) and not table.has_report:
        has_text = any(isinstance(r, str) and r.strip() for r in table.df["report"])
        if has_text or config.columns.report_path is not None:
            # some reports empty, or report files unreadable: the strict check names the rows (or
            # skips them with --skip-bad)
            require = (*require, "report")
        elif embed_text and not too_few:
            where = "table" if isinstance(source, pd.DataFrame) else str(source)
            column = config.columns.report_path or config.columns.report
            modalities = _drop_reports(modalities, audit_warnings, f"{where}: column '{column}'")
            rule_audit.warn(audit_warnings[-1])
    if "report" in require or len(table) < min_cases:
        table = load_case_table(
            source, config.columns, config.meta, require=require, min_cases=min_cases, **kw
        )
    return table, modalities


def run_audit(
    table: CaseTable | pd.DataFrame | str | os.PathLike[str],
    config: AuditConfig | None = None,
    out_dir: str | os.PathLike[str] = "audit_out",
    force: bool = False,
    precomputed: dict[str, np.ndarray] | None = None,
    concepts: tuple[pd.DataFrame | None, str | None] | None = None,
    *,
    extra: Callable[[AuditResult, Path], None] | None = None,
) -> AuditResult:
    """Run the whole audit and write ``slices.json``, ``membership.parquet`` and ``report.html``.

    Args:
        table: a validated :class:`CaseTable`, or a DataFrame / table file validated here with
            ``config.columns``, ``config.meta`` and ``config.skip_bad``.
        config: the run's settings (defaults: :class:`AuditConfig`).
        out_dir: output folder, replaced atomically: on any failure no (partial) folder is left.
            It must be absent, empty or an earlier audit output (see :mod:`medaudit.outdir`).
        force: also replace a folder medaudit did not write (never one holding an input).
        precomputed: embeddings per modality already aligned with the table's rows (e.g. shared by
            the findings of :func:`medaudit.audit.multitarget.audit_dataset`); they replace the encoder.
        concepts: the reports' concept codes already aligned with the table's rows, as
            :func:`medaudit.audit.rule_audit.report_concepts` returns them (codes or ``None``, and its
            warning); extracted from the reports when not given.
        extra: called with the result and the staging folder before the output is published, to add
            files of the caller's to it (``medaudit demo``: ``demo.json``); they are published with the
            audit's, atomically, and listed as medaudit's.

    Returns:
        An :class:`AuditResult`.

    Raises:
        InputError: bad table, embeddings, encoder / slicer names, or too few cases.
    """
    config = config or AuditConfig()
    if not isinstance(table, CaseTable):  # a CaseTable's metadata was chosen when it was read
        check_meta_columns(config.meta, config.columns)
    source = None if isinstance(table, (CaseTable, pd.DataFrame)) else table
    inputs = [source, *config.input_paths()]
    with claim_output(out_dir, "audit", inputs=inputs, force=force) as claim:
        result = _run_audit(table, config, claim, precomputed, concepts)
        if extra is not None:
            extra(result, claim.stage)
        return result


def _write_outputs(
    claim: OutputClaim,
    payload: dict[str, Any],
    membership: pd.DataFrame,
    table: CaseTable,
    scores: np.ndarray,
    fused: np.ndarray | None,
    write_report: bool,
) -> dict[str, Path]:
    """slices.json, membership.parquet and report.html into the claimed staging folder; their final paths."""
    out, stage = claim.path, claim.stage
    write_slices_json(stage / SLICES_FILE, payload)
    fault_point("audit:write")
    write_membership(stage / MEMBERSHIP_FILE, membership)
    paths = {"slices_json": out / SLICES_FILE, "membership": out / MEMBERSHIP_FILE}
    if write_report:
        from medaudit.report.audit_report import write_audit_report

        write_audit_report(stage / REPORT_FILE, payload, table, scores, fused)
        fault_point("audit:report")
        paths["report"] = out / REPORT_FILE
    return paths


def _warn_if_no_errors(table: CaseTable, audit_warnings: list[str]) -> None:
    if not table.errors.any():
        audit_warnings.append(
            f"the classifier makes no error on the {len(table)} cases: no slice can hold a failure "
            "(check the label and probability columns, and --threshold)"
        )
        rule_audit.warn(audit_warnings[-1])


def _table_concepts(
    table: CaseTable,
    lexicon: Lexicon | None,
    config: AuditConfig,
    audit_warnings: list[str],
    given: tuple[pd.DataFrame | None, str | None] | None = None,
) -> tuple[pd.DataFrame | None, str | None]:
    """The reports' concept codes (``None`` with a warning when no report text can be used) and that
    warning, added to ``audit_warnings`` but not yet shown: reports of "." or "no" also fail the report
    encoder, and its error alone is the one line then; ``given`` (codes aligned with the table's rows,
    and their warning) is used as it is."""
    if given is not None:
        concepts, msg = given
        if concepts is not None and len(concepts) != len(table):
            raise ValueError(f"concepts has {len(concepts)} rows for a case table of {len(table)}")
    else:
        concepts, msg = report_concepts(
            table.df["report"].tolist(),
            lexicon,
            qualified=config.concept_qualifiers,
            min_reports=config.rule_min_support,
        )
    if msg:
        audit_warnings.append(msg)
    return concepts, msg


def _rule_slices(
    predicates: pd.DataFrame, config: AuditConfig, targets: np.ndarray, probs: np.ndarray, progress: Any
) -> tuple[Any, np.ndarray]:
    """The fitted rule slicer and its slices' membership scores (members graded worst-first)."""
    task = progress.add_task("rule search", total=1)
    rule_slicer = _fit_rules(predicates, config, targets, probs)
    matches = rule_slicer.predict_proba(predicates, targets, probs)
    scores = rule_audit.member_scores(matches, targets, probs, config.membership_threshold)
    progress.update(task, completed=1)
    return rule_slicer, scores


def _membership_rule(config: AuditConfig) -> str:
    rule = f"a case is a member of a slice when its membership score is > {config.membership_threshold}"
    return rule + "; a rule slice's members are the cases its rule matches, scored worst-first"


@dataclass
class _Found:
    """What the slicers found: embeddings, fused space, slice scores and the rule search's state."""

    embs: dict[str, np.ndarray]
    fused: np.ndarray | None
    scores: np.ndarray
    families: list[str]
    slicer_err: Any
    slicer_score: Any
    predicates: pd.DataFrame | None
    rule_slicer: Any
    table: CaseTable
    concepts: pd.DataFrame | None


def _run_audit(
    table: CaseTable | pd.DataFrame | str | os.PathLike[str],
    config: AuditConfig,
    claim: OutputClaim,
    precomputed: dict[str, np.ndarray] | None = None,
    given_concepts: tuple[pd.DataFrame | None, str | None] | None = None,
) -> AuditResult:
    from medaudit.device import seed_everything

    seed_everything(config.seed)
    family = str(config.slicer).lower()
    modalities = () if family == "rules" else config.resolved_modalities()
    lexicon = load_lexicon(config.concepts) if config.concepts else None  # fail fast on a bad file
    _check_encoders(config, modalities, precomputed)  # before reading the table
    audit_warnings: list[str] = []
    with make_progress() as progress:
        table, modalities = _prepare_table(table, config, modalities, family, claim, progress, audit_warnings)
        concepts, lexicon_warning = _table_concepts(table, lexicon, config, audit_warnings, given_concepts)
        found = _discover(table, config, family, modalities, concepts, progress, precomputed, audit_warnings)
        if lexicon_warning:  # once the reports have been embedded: an error there is the one line
            rule_audit.warn(lexicon_warning)
        table, concepts = found.table, found.concepts
        slices = _explain_slices(
            found.scores,
            found.families,
            table,
            config,
            (found.slicer_err, found.slicer_score),
            found.rule_slicer,
            found.predicates,
            concepts,
            progress,
        )
        slices, scores = _rank_slices(slices, found.scores, table, config, family)
        counts = case_counts(table)
        payload = _payload(
            table, config, modalities, found, (concepts, lexicon), audit_warnings, slices, counts
        )
        membership = membership_frame(table.ids, scores)
        task = progress.add_task("write outputs", total=1)
        paths = _write_outputs(claim, payload, membership, table, scores, found.fused, config.write_report)
        progress.update(task, completed=1)
    return AuditResult(
        slices=slices,
        membership=membership,
        out_dir=claim.path,
        paths=paths,
        counts=counts,
        embedding=found.fused,
        table=table,
        payload=payload,
    )


def _prepare_table(
    table: CaseTable | pd.DataFrame | str | os.PathLike[str],
    config: AuditConfig,
    modalities: tuple[str, ...],
    family: str,
    claim: OutputClaim,
    progress: Any,
    audit_warnings: list[str],
) -> tuple[CaseTable, tuple[str, ...]]:
    """The validated case table (read when given as a path or frame) and the modalities it supports;
    refuses inputs inside the output folder."""
    min_cases = config.min_cases(family)
    if not isinstance(table, CaseTable):
        task = progress.add_task("read case table", total=1)
        table, modalities = _load_table(table, config, modalities, min_cases, audit_warnings, family)
        progress.update(task, completed=1)
    elif "metadata" in modalities and table.meta.shape[1] == 0:
        raise InputError("the metadata modality needs at least one metadata column (--meta)")
    claim.check_inputs([table.source, *table.df["image"].dropna().tolist()], "input file")
    n_errors = int(table.errors.sum())
    if family == "kmeans" and n_errors < config.n_slices:  # before any image is embedded
        raise InputError(
            f"{table.source or 'table'}: only {n_errors} misclassified cases; --slicer kmeans clusters "
            f"them and needs at least --n-slices ({config.n_slices})"
        )
    _warn_if_no_errors(table, audit_warnings)
    return table, modalities


def _discover(
    table: CaseTable,
    config: AuditConfig,
    family: str,
    modalities: tuple[str, ...],
    concepts: pd.DataFrame | None,
    progress: Any,
    precomputed: dict[str, np.ndarray] | None,
    audit_warnings: list[str] | None = None,
) -> _Found:
    """Embed and fit the mixture slicer (``mixture``/``both``), build the predicates and search rule
    slices (``rules``/``both``): every slice's scores, in one matrix, with its family (and the table
    and concepts, without the cases ``--skip-bad`` dropped because their image cannot be decoded)."""
    slicer = _slicer_for(config, family, len(table))
    embs: dict[str, np.ndarray] = {}
    if slicer is not None:
        embs, table, kept = _encode_table(
            table, config, modalities, progress, precomputed, None, audit_warnings
        )
        if kept is not None:  # --skip-bad dropped cases whose image cannot be decoded
            if len(table) < config.min_cases(family):
                raise InputError(
                    f"{table.source or 'table'}: {len(table)} valid cases after skipping "
                    f"{table.n_skipped} bad rows; at least {config.min_cases(family)} are needed"
                )
            if concepts is not None:
                concepts = concepts.iloc[kept].reset_index(drop=True)
            slicer = _slicer_for(config, family, len(table))
    targets = table.df["label"].to_numpy().astype(np.int64)
    probs = table.df["prob"].to_numpy().astype(np.float64)
    fused, scores, slicer_err, slicer_score = _fit_mixture(slicer, embs, config, targets, probs, progress)
    fault_point("audit:slice")
    families = ["mixture"] * scores.shape[1]
    predicates, rule_slicer, rule_scores = _search_rules(
        table, config, family, concepts, targets, probs, progress
    )
    if rule_scores is not None:
        scores = np.concatenate([scores, rule_scores], axis=1)
        families += ["rules"] * rule_scores.shape[1]
    return _Found(
        embs, fused, scores, families, slicer_err, slicer_score, predicates, rule_slicer, table, concepts
    )


def _slicer_for(config: AuditConfig, family: str, n: int) -> Any:
    """The embedding slicer of ``family`` for ``n`` cases (``both``: the mixture; ``rules``: none).
    ``slicer_kwargs`` go to the slicer that accepts them; a key no slicer of the family accepts is
    refused here, before any case is embedded."""
    from medaudit.audit.slicers import get_slicer

    if family not in ("rules", "both"):
        return _make_slicer(config, n)
    rule_keys = _rule_params()
    mix_keys = set(get_slicer("mixture").get_params(deep=False)) if family == "both" else set()
    unknown = sorted(set(config.slicer_kwargs) - rule_keys - mix_keys)
    if unknown:
        raise InputError(
            f"slicer_kwargs '{unknown[0]}': slicer '{family}' has no such parameter "
            f"(accepted: {', '.join(sorted(rule_keys | mix_keys))})"
        )
    if family == "rules":
        return None
    mix_kwargs = {k: v for k, v in config.slicer_kwargs.items() if k in mix_keys}
    return _make_slicer(config.model_copy(update={"slicer": "mixture", "slicer_kwargs": mix_kwargs}), n)


def _rule_params() -> set[str]:
    from medaudit.audit.slicers.rules import RuleSlicer

    return set(RuleSlicer().get_params(deep=False))


def _search_rules(
    table: CaseTable,
    config: AuditConfig,
    family: str,
    concepts: pd.DataFrame | None,
    targets: np.ndarray,
    probs: np.ndarray,
    progress: Any,
) -> tuple[pd.DataFrame | None, Any, np.ndarray | None]:
    """The predicates (``rules``/``both``, or when there are concepts) and, for ``rules``/``both``, the
    fitted rule slicer and its slices' scores (else ``None, None``)."""
    predicates = None
    if family in ("rules", "both") or concepts is not None:
        predicates = rule_audit.audit_predicates(
            concepts,
            table.meta,
            targets,
            table.df["report"].tolist(),
            max_ngrams=config.rule_ngrams,
            min_support=config.rule_min_support,
        )
    if family not in ("rules", "both"):
        return predicates, None, None
    return (predicates, *_rule_slices(predicates, config, targets, probs, progress))


def _payload(
    table: CaseTable,
    config: AuditConfig,
    modalities: tuple[str, ...],
    found: _Found,
    concept_state: tuple[pd.DataFrame | None, Lexicon | None],
    audit_warnings: list[str],
    slices: list[dict[str, Any]],
    counts: dict[str, Any],
) -> dict[str, Any]:
    """slices.json's content (docs/audit.md)."""
    family = str(config.slicer).lower()
    return {
        "schema_version": SCHEMA_VERSION,
        "medaudit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(table.source) if table.source else None,
        "config": config.to_dict(),
        "modalities": list(modalities),
        "embedding_dims": {m: int(e.shape[1]) for m, e in found.embs.items()},
        "fused_dim": int(found.fused.shape[1]) if found.fused is not None else 0,
        "counts": counts,
        "warnings": audit_warnings,
        "concepts": concept_summary(*concept_state),
        "rule_search": rule_search_summary(found.rule_slicer, found.predicates),
        "ranking": _RANKING_NOTE[family if family in _RANKING_NOTE else "mixture"],
        "membership_rule": _membership_rule(config),
        "slices": slices,
    }
