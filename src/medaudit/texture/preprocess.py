"""The model's own input normalisation, applied to every patch (training) and every window (inference).

Scans are already scaled to about ``[0, 1]`` when loaded (robust percentiles,
:func:`medaudit.texture.data.normalise_intensity`), but a corruption applied afterwards (a bias field,
gamma, noise, a contrast change) moves that scale again. Normalising what the network sees undoes
global intensity shifts at test time as it does in training. It is part of the model: stored in the
training config (``input_norm``) and applied by training, validation, evaluation and prediction.

* ``none``: as loaded (the default; models trained before this option).
* ``zscore``: ``(x - mean) / std`` per sample and channel.
* ``percentile``: ``(x - p1) / (p99 - p1)`` per sample and channel.
"""

from __future__ import annotations

import torch
from torch import Tensor

INPUT_NORMS = ("none", "zscore", "percentile")
_MAX_QUANTILE = 1_000_000


def normalise_input(x: Tensor, mode: str) -> Tensor:
    """Normalise a batch ``(B, C, D, H, W)`` per sample and channel (``mode`` in :data:`INPUT_NORMS`)."""
    if mode == "none":
        return x
    flat = x.flatten(2)
    if mode == "zscore":
        mean = flat.mean(-1, keepdim=True)
        std = flat.std(-1, keepdim=True).clamp_min(1e-6)
        return ((flat - mean) / std).view_as(x)
    if mode == "percentile":
        step = max(1, flat.shape[-1] // _MAX_QUANTILE)
        q = torch.quantile(flat[..., ::step].float(), torch.tensor([0.01, 0.99], device=x.device), dim=-1)
        lo, hi = q[0].to(x.dtype)[..., None], q[1].to(x.dtype)[..., None]
        return ((flat - lo) / (hi - lo).clamp_min(1e-6)).view_as(x)
    raise ValueError(f"unknown input_norm '{mode}'; choose one of {list(INPUT_NORMS)}")
