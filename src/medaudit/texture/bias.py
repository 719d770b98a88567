"""Texture-bias score for 3D segmentation: Geirhos' shape-vs-texture cue conflict, per voxel.

A segmentation model can find a tissue by its *texture* (its intensity and local appearance) or by
its *shape* (where it lies, how its boundaries run, what surrounds it). Two probes separate the cues:

- **Shape kept, texture changed** (:func:`remap_tissues`): every tissue keeps its voxels, and so its
  shape and boundaries, but its intensity level is moved to another tissue's level. The strength is
  the fraction of tissue pairs whose intensity order is reversed; 1 is a full contrast inversion
  (a T1-like scan becomes T2-like). Within-tissue variation is kept, so edges stay visible.
- **Texture kept, shape destroyed** (:func:`shuffle_patches`): the head is cut into cubes of
  ``patch`` voxels and the cubes that lie inside the head are permuted (the label map with them).
  Inside a cube, intensities, tissue contrast and local edges are untouched; the global layout that
  defines shape (cortex on the rim, white matter inside, ventricles in the centre) is gone. Patch
  shuffling is the 3D analogue of the jigsaw/patch-shuffle probes used for 2D texture bias; unlike
  style transfer it needs no pretrained network, and unlike voxel shuffling it keeps local texture.
  The cube edge (default 4 and 8 voxels) is a few times the cortical thickness: large enough to hold
  several tissues and their contrast, far smaller than the head.

Dice is measured against the correspondingly transformed reference, and divided by clean Dice:

    shape_retention   = mean Dice(shape kept) / Dice(clean)     (a model that uses shape survives)
    texture_retention = mean Dice(texture kept) / Dice(clean)   (a model that uses texture survives)
    texture_bias      = texture_retention / (texture_retention + shape_retention)   in [0, 1]

(both retentions clipped to [0, 1]). 1 means the model follows texture only (a voxel-wise intensity
threshold scores 1), 0 means shape only (an atlas that ignores intensities scores about 0), 0.5 balance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medaudit.errors import InputError

STRENGTHS: tuple[float, ...] = (1 / 3, 2 / 3, 1.0)  # fraction of tissue pairs whose order is reversed
PATCHES: tuple[int, ...] = (4, 8)  # cube edges (voxels) of the patch shuffle
SHAPE_KEPT, TEXTURE_KEPT, CLEAN = "shape_kept", "texture_kept", "clean"


def _order_permutation(n: int, inversions: int, g: torch.Generator) -> list[int]:
    """A permutation of ``range(n)`` with exactly ``inversions`` inverted pairs (random, seeded)."""
    perm = list(range(n))
    for _ in range(min(inversions, n * (n - 1) // 2)):
        ups = [i for i in range(n - 1) if perm[i] < perm[i + 1]]
        i = ups[int(torch.randint(len(ups), (1,), generator=g))]
        perm[i], perm[i + 1] = perm[i + 1], perm[i]
    return perm


def remap_tissues(
    image: torch.Tensor,
    label: torch.Tensor,
    strength: float,
    seed: int = 0,
    keep: Sequence[int] = (0,),
) -> torch.Tensor:
    """Shape kept, texture changed: move each tissue's intensity level to another tissue's level.

    Tissues (label values not in ``keep``; 0, outside the head, stays as it is) are ranked by their
    median intensity; a permutation with ``round(strength * n_pairs)`` inverted pairs reassigns the
    medians, and each voxel keeps its deviation from its tissue's median. ``strength`` 1 reverses the
    order (contrast inversion). Output is clipped to the input's range.
    """
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"remap strength must lie in [0, 1], got {strength}")
    x, lab = image.float(), label.long().reshape(image.shape)
    tissues = [int(t) for t in torch.unique(lab) if int(t) not in set(keep)]
    if len(tissues) < 2:
        return x.clone()
    med = torch.stack([x[lab == t].median() for t in tissues])
    order = torch.argsort(med).tolist()  # order[r] = index of the tissue of rank r
    n_pairs = len(tissues) * (len(tissues) - 1) // 2
    g = torch.Generator().manual_seed(int(seed))
    perm = _order_permutation(len(tissues), round(strength * n_pairs), g)
    out = x.clone()
    for rank, ti in enumerate(order):
        new_level = med[order[perm[rank]]]
        sel = lab == tissues[ti]
        out[sel] = x[sel] - med[ti] + new_level
    return out.clamp(float(x.min()), float(x.max()))


def shuffle_patches(
    image: torch.Tensor,
    label: torch.Tensor,
    patch: int,
    seed: int = 0,
    min_inside: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Texture kept, shape destroyed: permute the ``patch``-voxel cubes that lie inside the head.

    ``image`` and ``label`` are ``(1,D,H,W)``. A cube is inside the head when at least ``min_inside``
    of its voxels have a non-zero label. Cubes outside the head and the border remainder stay in
    place; image and label move together, so the shuffled label is the reference.
    """
    if patch < 1:
        raise InputError(f"patch size must be >= 1, got {patch}")
    lab = label.reshape(image.shape)
    _, d, h, w = image.shape
    nd, nh, nw = d // patch, h // patch, w // patch
    if nd * nh * nw == 0:
        return image.clone(), lab.clone()

    def cubes(t: torch.Tensor) -> torch.Tensor:
        c = t[0, : nd * patch, : nh * patch, : nw * patch]
        c = c.reshape(nd, patch, nh, patch, nw, patch).permute(0, 2, 4, 1, 3, 5)
        return c.reshape(nd * nh * nw, patch, patch, patch)

    def uncubes(c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        c = c.reshape(nd, nh, nw, patch, patch, patch).permute(0, 3, 1, 4, 2, 5)
        out[0, : nd * patch, : nh * patch, : nw * patch] = c.reshape(nd * patch, nh * patch, nw * patch)
        return out

    ci, cl = cubes(image), cubes(lab)
    inside = torch.nonzero((cl > 0).float().mean((1, 2, 3)) >= min_inside).flatten()
    g = torch.Generator().manual_seed(int(seed))
    src = inside[torch.randperm(len(inside), generator=g)]
    ci2, cl2 = ci.clone(), cl.clone()
    ci2[inside], cl2[inside] = ci[src], cl[src]
    return uncubes(ci2, image), uncubes(cl2, lab)


def mean_dice(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> float:
    """Mean Dice over the foreground classes present in ``label`` (NaN if none is present)."""
    p, y = pred.reshape(-1).long(), label.reshape(-1).long()
    scores = []
    for k in range(1, n_classes):
        ny = int((y == k).sum())
        if ny == 0:
            continue
        np_, inter = int((p == k).sum()), int(((p == k) & (y == k)).sum())
        scores.append(2.0 * inter / (np_ + ny))
    return float(np.mean(scores)) if scores else float("nan")


def probe_conditions(
    image: torch.Tensor,
    label: torch.Tensor,
    strengths: Sequence[float] = STRENGTHS,
    patches: Sequence[int] = PATCHES,
    seed: int = 0,
) -> list[tuple[str, float, torch.Tensor, torch.Tensor]]:
    """``(probe, level, image, reference)`` for clean, every remap strength and every patch size."""
    lab = label.reshape(image.shape).long()
    out = [(CLEAN, 0.0, image, lab)]
    out += [(SHAPE_KEPT, float(s), remap_tissues(image, lab, s, seed), lab) for s in strengths]
    out += [(TEXTURE_KEPT, float(p), *shuffle_patches(image, lab, int(p), seed)) for p in patches]
    return out


def texture_bias_score(dice_clean: float, dice_shape_kept: float, dice_texture_kept: float) -> float:
    """``r_tex / (r_tex + r_shape)`` with retentions ``Dice(probe) / Dice(clean)`` clipped to [0, 1].

    NaN when clean Dice is not positive or both retentions are 0 (no cue is used at all).
    """
    if not np.isfinite(dice_clean) or dice_clean <= 0:
        return float("nan")
    r_shape = float(np.clip(dice_shape_kept / dice_clean, 0.0, 1.0))
    r_tex = float(np.clip(dice_texture_kept / dice_clean, 0.0, 1.0))
    if r_shape + r_tex == 0:
        return float("nan")
    return r_tex / (r_tex + r_shape)


def probe_rows(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    label: torch.Tensor,
    n_classes: int,
    strengths: Sequence[float] = STRENGTHS,
    patches: Sequence[int] = PATCHES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Dice of ``predict`` (image ``(1,D,H,W)`` -> labels ``(D,H,W)``) under every probe condition."""
    return [
        {"probe": probe, "level": level, "dice": mean_dice(predict(img), ref, n_classes)}
        for probe, level, img, ref in probe_conditions(image, label, strengths, patches, seed)
    ]


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: clean Dice, mean Dice under each probe, both retentions and ``texture_bias``.

    ``rows`` has columns ``model, case, probe, level, dice``; Dice is averaged over cases per
    condition, then over the conditions of a probe.
    """
    per = rows.groupby(["model", "probe", "level"], sort=False)["dice"].mean().reset_index()
    out = []
    for model, g in per.groupby("model", sort=False):
        d = g.groupby("probe")["dice"].mean()
        dc, ds, dt = (float(d.get(k, np.nan)) for k in (CLEAN, SHAPE_KEPT, TEXTURE_KEPT))
        out.append(
            {
                "model": model,
                "dice_clean": dc,
                "dice_shape_kept": ds,
                "dice_texture_kept": dt,
                "shape_retention": float(np.clip(ds / dc, 0, 1)) if dc > 0 else np.nan,
                "texture_retention": float(np.clip(dt / dc, 0, 1)) if dc > 0 else np.nan,
                "texture_bias": texture_bias_score(dc, ds, dt),
            }
        )
    return pd.DataFrame(out)


def evaluate_texture_bias(
    checkpoints: Sequence[str | Path] | Mapping[str, str | Path],
    cases: Sequence[Any],
    strengths: Sequence[float] = STRENGTHS,
    patches: Sequence[int] = PATCHES,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Long table (``model, case, probe, level, dice``) of trained models on test cases; see :func:`summarise`.

    ``cases`` may be :class:`medaudit.texture.evaluate.CaseVolumes`, to reuse the volumes it read."""
    from medaudit.texture.evaluate import _load_models, case_volumes
    from medaudit.texture.train import derive_seed
    from medaudit.texture.unet import sliding_window_predict

    models = _load_models(checkpoints, device)
    meta0 = models[0][2]
    vols = case_volumes(cases).load(meta0["label_set"], meta0["config"].spacing)
    rows: list[dict[str, Any]] = []
    for i, case in enumerate(vols.cases):
        vol = vols.volume(i)
        conds = probe_conditions(
            vol["image"], vol["label"], strengths, patches, derive_seed(seed, case.case_id, "bias")
        )
        for name, model, meta in models:
            cfg = meta["config"]
            for probe, level, img, ref in conds:
                pred = sliding_window_predict(model, img, cfg.roi, meta["device"], cfg.sw_batch_size, cfg.amp)
                dice = mean_dice(pred, ref, int(meta["n_classes"]))
                rows.append(
                    {"model": name, "case": case.case_id, "probe": probe, "level": level, "dice": dice}
                )
    return pd.DataFrame(rows, columns=["model", "case", "probe", "level", "dice"])


def study_texture_bias(out_dir: str | Path, results: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per trained model of a study folder: :func:`summarise` of its texture-bias probes.

    Models are the ``model`` labels of the study's ``results.parquet`` (or ``results``), with their
    checkpoints ``train/<train_key>/model.pt``; the test cases are the first model's test split. Adds
    ``row`` (the model label without its seed) so that seeds can be averaged.
    """
    import json

    from medaudit.data import mri as tdata

    out_dir = Path(out_dir)
    if results is None:
        results = pd.read_parquet(out_dir / "results.parquet")
    pairs = results[["model", "train_key"]].drop_duplicates().sort_values("model")
    ckpts = {str(m): out_dir / "train" / str(k) / "model.pt" for m, k in pairs.itertuples(index=False)}
    ckpts = {m: p for m, p in ckpts.items() if p.is_file()}
    if not ckpts:
        return pd.DataFrame()
    split = json.loads((next(iter(ckpts.values())).parent / "split.json").read_text())
    cases = [tdata.VolumeCase.from_dict(d) for d in split["test"]]
    table = summarise(evaluate_texture_bias(ckpts, cases))
    table.insert(1, "row", table["model"].str.replace(r" seed=\d+$", "", regex=True))
    return table


def bias_by_row(table: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged texture-bias table: mean and min-max over seeds of each training row."""
    g = table.groupby("row", sort=False)
    out = g[["dice_clean", "shape_retention", "texture_retention", "texture_bias"]].mean()
    out["bias_min"], out["bias_max"], out["seeds"] = (
        g["texture_bias"].min(),
        g["texture_bias"].max(),
        g.size(),
    )
    return out.reset_index().sort_values("texture_bias", ascending=False)


def write_study_texture_bias(out_dir: str | Path, results: pd.DataFrame) -> pd.DataFrame | None:
    """:func:`study_texture_bias` of a study folder, written to ``texture_bias.csv`` (atomically)."""
    from medaudit.io import atomic_write_text

    if results is None or results.empty or "train_key" not in results.columns:
        return None
    table = study_texture_bias(out_dir, results)
    if not table.empty:
        atomic_write_text(Path(out_dir) / "texture_bias.csv", table.to_csv(index=False))
    return table
