"""Evaluate trained segmentation models on clean and corrupted test scans.

Each corruption is applied to each test scan deterministically: the seed is derived from
``(seed, case, corruption, severity)``, so every model sees exactly the same corrupted scan and a
rerun reproduces it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medaudit.data import mri as tdata
from medaudit.errors import InputError
from medaudit.progress import make_progress
from medaudit.texture.checkpoint import load_model
from medaudit.texture.filters.registry import is_clean
from medaudit.texture.metrics import segmentation_scores
from medaudit.texture.severity import SEVERITY_VERSION, check_version, wm_label_of
from medaudit.texture.train import apply_corruption, derive_seed, family_of
from medaudit.texture.unet import sliding_window_predict

COLUMNS = [
    "model",
    "train_filter",
    "train_mode",
    "train_severity",
    "train_families",
    "corruption",
    "family",
    "seen",
    "severity",
    "severity_version",
    "case",
    "class",
    "class_index",
    "dice",
    "hd95",
]


def _load_models(
    checkpoints: Sequence[str | Path] | Mapping[str, str | Path], device: str | torch.device | None
) -> list[tuple[str, torch.nn.Module, dict[str, Any]]]:
    items = (
        list(checkpoints.items()) if isinstance(checkpoints, Mapping) else [(None, p) for p in checkpoints]
    )
    if not items:
        raise InputError("no model checkpoints given")
    models = []
    for name, path in items:
        model, meta = load_model(path, device)
        models.append((name or str(meta["train_filter"]), model, meta))
    models = _distinct_names(models)
    first = models[0][2]
    for _, _, meta in models[1:]:
        if meta["label_set"] != first["label_set"] or meta["n_classes"] != first["n_classes"]:
            raise InputError(f"{meta['path']}: label set '{meta['label_set']}' differs from {first['path']}")
        # the test scans are loaded once, at the first model's working spacing: another spacing would
        # be scored on scans it was not trained at
        sp, sp0 = meta["config"].spacing, first["config"].spacing
        if sp != sp0:
            raise InputError(
                f"{meta['path']}: working spacing {_mm(sp)} differs from {_mm(sp0)} of {first['path']}; "
                "evaluate them separately"
            )
    return models


def _mm(spacing: float | None) -> str:
    return "native (none)" if spacing is None else f"{spacing:g} mm"


def _distinct_names(
    models: list[tuple[str, torch.nn.Module, dict[str, Any]]],
) -> list[tuple[str, torch.nn.Module, dict[str, Any]]]:
    """The same training filter twice is told apart by its run folder's name, and when two runs share
    that name (``a/run``, ``b/run``) by the folder's path: their rows were merged under one label."""
    named = models
    for where in (lambda p: p.parent.name, lambda p: str(p.parent)):
        if len({n for n, _, _ in named}) == len(named):
            break
        named = [(f"{n}[{where(Path(meta['path']))}]", m, meta) for n, m, meta in models]
    return named


def _is_clean(name: str) -> bool:
    return is_clean(name)


#: bytes of pre-processed test volumes that :class:`CaseVolumes` keeps in memory between reading (and
#: checking) every case and using it; a case beyond it is read again when it is used
KEEP_BYTES = 2 * 2**30


class CaseVolumes:
    """Test cases, each read from disk once: :meth:`load` reads, checks and pre-processes every case (so
    a bad third case fails with one line naming its file before the first is scored) and keeps the
    volumes, while they total at most ``keep_bytes``, for the scoring, the texture-bias probes and the
    report's slices (:func:`evaluate`, :func:`medaudit.texture.bias.evaluate_texture_bias`,
    :func:`example_slices` all take one). A case beyond the budget is read again when used."""

    def __init__(self, cases: Sequence[tdata.VolumeCase], keep_bytes: int | None = None) -> None:
        self.cases = list(cases)
        self.keep_bytes = KEEP_BYTES if keep_bytes is None else int(keep_bytes)
        self._how: tuple[str, Any] | None = None
        self._kept: list[dict[str, Any] | None] = []

    def __len__(self) -> int:
        return len(self.cases)

    def load(self, label_set: str, spacing: Any) -> CaseVolumes:
        """Read and check every case with ``label_set`` and working ``spacing`` (once for these)."""
        if self._how != (label_set, spacing):
            self._how, self._kept, used, foreground = None, [], 0, False
            for case in self.cases:
                vol = _load_labelled_case(case, label_set, spacing)
                foreground = foreground or bool((vol["label"] > 0).any())
                size = vol["image"].nbytes + vol["label"].nbytes
                keep = used + size <= self.keep_bytes
                self._kept.append(vol if keep else None)
                used += size if keep else 0
            if self.cases and not foreground:  # every Dice and HD95 would be undefined (NaN)
                raise InputError(
                    f"{self.cases[0].label}: every label map of the {len(self.cases)} test case(s) is all "
                    f"background (no '{label_set}' foreground label); nothing to score"
                )
            self._how = (label_set, spacing)
        return self

    def volume(self, i: int) -> dict[str, Any]:
        """The loaded volume of case ``i`` (after :meth:`load`)."""
        if self._how is None:
            raise RuntimeError("CaseVolumes.volume before load")
        vol = self._kept[i]
        return vol if vol is not None else _load_labelled_case(self.cases[i], *self._how)


def case_volumes(cases: Sequence[tdata.VolumeCase] | CaseVolumes) -> CaseVolumes:
    """``cases`` as :class:`CaseVolumes` (itself when it is one)."""
    return cases if isinstance(cases, CaseVolumes) else CaseVolumes(cases)


def evaluate(
    checkpoints: Sequence[str | Path] | Mapping[str, str | Path],
    cases: Sequence[tdata.VolumeCase] | CaseVolumes,
    corruptions: Sequence[str],
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    severity_version: int = SEVERITY_VERSION,
) -> pd.DataFrame:
    """Long results table: one row per model x corruption x severity x case x foreground class.

    ``corruptions`` are names from :mod:`medaudit.texture.filters`; ``none`` (or ``clean``) means the
    clean scans, evaluated once at severity 0. Columns: see :data:`COLUMNS` (``seen``: the corruption's
    family was among the families the model saw in training). Cases are loaded with the models'
    label set and working spacing (from the first model's training config); pass :class:`CaseVolumes`
    to reuse the volumes read here. ``severity_version`` selects the severity table
    (:mod:`medaudit.texture.severity`; 2 = physical levels) and is a column.
    """
    if not len(cases):
        raise InputError("no test cases given")
    for s in severities:
        if not 1 <= int(s) <= 5:
            raise InputError(f"severity {s} outside 1..5")
    models = _load_models(checkpoints, device)
    meta0 = models[0][2]
    version, wm = check_version(severity_version), wm_label_of(meta0["label_set"])
    vols = case_volumes(cases).load(meta0["label_set"], meta0["config"].spacing)  # all checked first
    families = {c: family_of(c) for c in corruptions}
    conditions = _conditions(corruptions, severities)
    rows: list[dict[str, Any]] = []
    with make_progress(disable=None if progress is None else not progress) as prog:
        task = prog.add_task("evaluate", total=len(vols) * len(conditions) * len(models))
        for i, case in enumerate(vols.cases):
            vol = vols.volume(i)
            for corr, sev in conditions:
                img = apply_corruption(
                    corr,
                    sev,
                    vol["image"],
                    vol["label"],
                    derive_seed(seed, case.case_id, corr, sev),
                    version,
                    vol["spacing"],
                    wm,
                )
                fam = "clean" if _is_clean(corr) else families[corr]
                for name, model, meta in models:
                    dice, hd = _predict_and_score(model, meta, img, vol)
                    rows.extend(_result_rows(name, meta, case.case_id, corr, fam, sev, version, dice, hd))
                    prog.advance(task)
    return pd.DataFrame(rows, columns=COLUMNS)


def _conditions(corruptions: Sequence[str], severities: Sequence[int]) -> list[tuple[str, int]]:
    """(corruption, severity) pairs: clean names once at severity 0, the others at every severity."""
    return [
        (c, 0) if _is_clean(c) else (c, int(s))
        for c in corruptions
        for s in ([0] if _is_clean(c) else severities)
    ]


def _load_labelled_case(case: tdata.VolumeCase, label_set: str, spacing: Any) -> dict[str, Any]:
    """``case`` loaded with the models' label set and working spacing; it must have a label map."""
    vol = tdata.load_case(case, label_set=label_set, spacing=spacing)
    if vol["label"] is None:
        raise InputError(f"{case.image}: evaluation needs a label map")
    return vol


def _predict_and_score(
    model: torch.nn.Module, meta: dict[str, Any], img: torch.Tensor, vol: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-foreground-class (Dice, HD95) of ``model``'s sliding-window prediction on ``img``."""
    cfg = meta["config"]
    pred = sliding_window_predict(model, img, cfg.roi, meta["device"], cfg.sw_batch_size, cfg.amp)
    return segmentation_scores(pred, vol["label"][0], int(meta["n_classes"]), vol["spacing"])


def _result_rows(
    name: str,
    meta: dict[str, Any],
    case_id: str,
    corr: str,
    fam: str,
    sev: int,
    version: int,
    dice: np.ndarray,
    hd: np.ndarray,
) -> list[dict[str, Any]]:
    """One :data:`COLUMNS` row per foreground class of one model x condition x case."""
    cfg = meta["config"]
    fams = list(meta.get("train_families", []))
    return [
        {
            "model": name,
            "train_filter": str(meta.get("filter_name", meta["train_filter"])),
            "train_mode": str(meta.get("train_mode", cfg.mode)),
            "train_severity": int(meta.get("train_severity", 0)),
            "train_families": ",".join(fams),
            "corruption": "none" if _is_clean(corr) else corr,
            "family": fam,
            "seen": bool(fam in fams),
            "severity": int(sev),
            "severity_version": version,
            "case": case_id,
            "class": str(meta["class_names"][k]),
            "class_index": k,
            "dice": float(dice[k - 1]),
            "hd95": float(hd[k - 1]),
        }
        for k in range(1, int(meta["n_classes"]))
    ]


def example_slices(
    checkpoints: Sequence[str | Path] | Mapping[str, str | Path],
    case: tdata.VolumeCase | CaseVolumes,
    corruptions: Sequence[str],
    severity: int = 3,
    seed: int = 0,
    axis: int = 2,
    device: str | torch.device | None = None,
    severity_version: int = SEVERITY_VERSION,
) -> dict[str, Any]:
    """Middle slices for a report: the clean image and reference, and per corruption (at ``severity``,
    with the same seed as :func:`evaluate`) the corrupted image and each model's prediction.

    Returns ``{"case", "axis", "image", "label", "rows": [{"corruption", "severity", "image",
    "predictions": {model: slice}}]}`` with 2-D numpy arrays. ``case`` may be :class:`CaseVolumes`
    (its first case is shown, as already read).
    """
    models = _load_models(checkpoints, device)
    meta0 = models[0][2]
    if isinstance(case, CaseVolumes):
        vol = case.load(meta0["label_set"], meta0["config"].spacing).volume(0)
        case = case.cases[0]
    else:
        vol = tdata.load_case(case, label_set=meta0["label_set"], spacing=meta0["config"].spacing)
    img, lab = vol["image"], vol["label"]
    mid = img.shape[axis + 1] // 2

    def cut(x: torch.Tensor) -> np.ndarray:
        return np.asarray(x.select(axis, mid).cpu().numpy())

    rows = []
    for corr in ["none", *[c for c in corruptions if not _is_clean(c)]]:
        sev = 0 if _is_clean(corr) else int(severity)
        x = apply_corruption(
            corr,
            sev,
            img,
            lab,
            derive_seed(seed, case.case_id, corr, sev),
            severity_version,
            vol["spacing"],
            wm_label_of(meta0["label_set"]),
        )
        preds = {}
        for name, model, meta in models:
            cfg = meta["config"]
            preds[name] = cut(
                sliding_window_predict(model, x, cfg.roi, meta["device"], cfg.sw_batch_size, cfg.amp)
            )
        rows.append({"corruption": corr, "severity": sev, "image": cut(x[0]), "predictions": preds})
    return {
        "case": case.case_id,
        "axis": axis,
        "image": cut(img[0]),
        "label": None if lab is None else cut(lab[0]),
        "rows": rows,
    }
