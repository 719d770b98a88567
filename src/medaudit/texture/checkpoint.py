"""Checkpoints and trained models of the texture half: RNG states as tensors, atomic ``torch.save``,
``torch.load(weights_only=True)`` with one-line errors, and rebuilding a model from ``model.pt``."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaudit.data import mri as tdata
from medaudit.device import default_device, load_weights_only
from medaudit.errors import InputError
from medaudit.io import atomic_save, missing_reason
from medaudit.texture.train_config import TrainConfig
from medaudit.texture.unet import build_model


def rng_state() -> dict[str, Any]:
    """The torch, NumPy, Python (and CUDA) RNG states as tensors, loadable with ``weights_only=True``."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": torch.tensor([int(np_state[2]), int(np_state[3])], dtype=torch.int64),
        "numpy_gauss": torch.tensor([float(np_state[4])], dtype=torch.float64),
        "python": torch.tensor([int(x) for x in py_state[1]], dtype=torch.int64),
        "python_version": torch.tensor([int(py_state[0])], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore the states :func:`rng_state` took (a resumed run continues the same draws)."""
    torch.set_rng_state(st["torch"])
    pos = st["numpy_pos"].tolist()
    np.random.set_state(
        ("MT19937", st["numpy_keys"].numpy().astype(np.uint32), pos[0], pos[1], float(st["numpy_gauss"][0]))
    )
    random.setstate((int(st["python_version"][0]), tuple(int(x) for x in st["python"].tolist()), None))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(st["cuda"]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic ``torch.save``."""
    with atomic_save(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a one-line InputError naming the file if it is not ours.

    Anything ``weights_only`` refuses (a pickle that would run code), and anything that is not a torch
    file at all, gets the same line; unsafe loading is never suggested.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {missing_reason(p, 'model file')}")
    if not p.is_file():
        raise InputError(f"{p}: is not a file (expected a model.pt written by medaudit texture train)")
    try:
        st = load_weights_only(p)
    except Exception:
        raise InputError(f"not a medaudit model, or unsafe to load: {p}") from None
    if not isinstance(st, dict):
        raise InputError(f"not a medaudit model, or unsafe to load: {p}")
    return st


def _usable_device(spec: str | None) -> str | None:
    """The device a model was trained on when this machine has it, else ``None`` (pick one): a model
    trained with ``device: cuda`` stays usable on a CPU-only machine."""
    from medaudit.device import check_device

    try:
        return check_device(spec)
    except InputError:
        return None


def check_model_meta(st: dict[str, Any]) -> None:
    """The metadata evaluation reads: a text ``train_filter`` (and, when present, text ``filter_name`` /
    ``train_mode``, a level ``train_severity`` 0..5 and a list of family names ``train_families``);
    ``ValueError`` otherwise."""
    if not isinstance(st.get("train_filter"), str):
        raise ValueError("train_filter: missing or not text")
    for key in ("filter_name", "train_mode"):
        if key in st and not isinstance(st[key], str):
            raise ValueError(f"{key}: not text")
    sev = st.get("train_severity", 0)
    if isinstance(sev, bool) or not isinstance(sev, int) or not 0 <= sev <= 5:
        raise ValueError("train_severity: not a level 0..5")
    fams = st.get("train_families", [])
    if not isinstance(fams, list) or not all(isinstance(f, str) for f in fams):
        raise ValueError("train_families: not a list of names")


def load_model(
    path: str | Path, device: str | torch.device | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from ``model.pt``; returns ``(model in eval mode, metadata)``."""
    st = load_checkpoint(path)
    if "state_dict" not in st or "config" not in st:
        raise InputError(
            f"not a medaudit model, or unsafe to load: {path} (use the model.pt written by train)"
        )
    try:
        stored = json.loads(st["config"])
        stored.setdefault("severity_version", 1)  # models trained before severity tables were versioned
        config = TrainConfig.from_dict(stored)
        model = build_model(
            int(st["n_classes"]), config.channels, config.num_res_units, config.dropout, config.input_norm
        )
        model.load_state_dict(st["state_dict"])
        # what evaluation and prediction read: a known label set with these classes
        ls = tdata.get_label_set(st["label_set"])
        if ls.n_classes != int(st["n_classes"]) or [str(c) for c in st["class_names"]] != list(
            ls.class_names
        ):
            raise ValueError("label set, n_classes and class_names disagree")
        check_model_meta(st)
    except Exception:  # a dict that looks like ours but is not: wrong keys, shapes, config or labels
        raise InputError(f"not a medaudit model, or unsafe to load: {path} (inconsistent contents)") from None
    if not all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point()):
        raise InputError(f"{path}: the model's weights hold NaN or infinity (a diverged training run?)")
    dev = default_device(str(device) if device is not None else _usable_device(config.device))
    model.to(dev).eval()
    meta = {k: v for k, v in st.items() if k != "state_dict"}
    meta["config"] = config
    meta["device"] = dev
    meta["path"] = str(path)
    return model, meta
