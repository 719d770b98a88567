"""Versioned severity tables: what corruption level 1..5 means, in physical terms (``docs/severities.md``).

* **Version 1** is the original table of :data:`medaudit.texture.filters.SEVERITY`: filter parameters
  in voxel and normalised-intensity units, independent of the scan.
* **Version 2** (the default, :data:`SEVERITY_VERSION`) defines each level by a physical quantity:
  noise by its SNR relative to the white-matter (WM) signal, blur and slice thickness in mm, motion
  in degrees and mm, the bias field by its peak multiplicative range, Gibbs ringing by the fraction
  of k-space kept, ghosting by the ghost-to-signal ratio, spikes by the stripe amplitude relative to
  WM, and so on (:data:`PHYSICAL`). The filter parameters are resolved per scan from its voxel
  spacing, its size and its reference intensity (:func:`reference_intensity`).

:func:`get_corruption` returns a callable ``fn(image, label=None)`` for a ``(C, D, H, W)`` or
``(B, C, D, H, W)`` tensor; the parameters it applied are in ``fn.last_records``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from medaudit.errors import InputError

SEVERITY_VERSION = 2
SEVERITY_VERSIONS = (1, 2)
_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))  # FWHM / sigma of a Gaussian


@dataclass(frozen=True)
class ScanContext:
    """What a physical level needs to know about one scan."""

    ref: float  # reference signal (WM median, or head median without labels), normalised units
    spacing: tuple[float, float, float]  # mm per voxel along D, H, W
    shape: tuple[int, int, int]
    mean_abs: float  # mean |x| over the scan


@dataclass(frozen=True)
class PhysicalLevel:
    """One corruption's v2 definition: the physical quantity, its 5 level values and the resolver."""

    quantity: str
    unit: str
    values: tuple[float, ...]
    resolve: Callable[[float, ScanContext], dict[str, Any]]
    per_scan: bool = False  # parameters depend on the scan's intensities (resolved per sample)


def _noise_std(snr: float, ctx: ScanContext) -> dict[str, Any]:
    return {"std": ctx.ref / snr}


def _blur(fwhm: float, ctx: ScanContext) -> dict[str, Any]:
    return {"sigma": [fwhm / _FWHM / s for s in ctx.spacing]}


def _low_res(thickness: float, ctx: ScanContext) -> dict[str, Any]:
    return {"factor": max(1.0, thickness / ctx.spacing[0]), "axis": 0}


def _ghosting(ratio: float, ctx: ScanContext) -> dict[str, Any]:
    # every 2nd k-space line scaled by (1 - a): image (1 - a/2) x, ghost (a/2) x shifted by FOV/2
    return {"intensity": 2.0 * ratio / (1.0 + ratio), "num_ghosts": 2, "axis": 0}


def _spike(ratio: float, ctx: ScanContext) -> dict[str, Any]:
    # Spike's stripe amplitude is intensity * mean|x|; we want ratio * ref
    return {"intensity": ratio * ctx.ref / max(ctx.mean_abs, 1e-8), "num_spikes": 1}


# degrees -> (translation in mm, central band of k-space acquired before the movements)
_MOTION = {1.0: (1.0, 0.6), 2.0: (2.0, 0.5), 4.0: (4.0, 0.4), 6.0: (6.0, 0.3), 10.0: (10.0, 0.2)}


def _motion(deg: float, ctx: ScanContext) -> dict[str, Any]:
    mm, band = _MOTION[float(deg)]
    vox = mm / (sum(ctx.spacing) / 3.0)
    return {
        "degrees": deg,
        "translation": vox,
        "num_transforms": 2,
        "times": [0.5 - band / 2, 0.5 + band / 2],
    }


#: name -> v2 definition; the values are listed for levels 1..5.
PHYSICAL: dict[str, PhysicalLevel] = {
    "gaussian_noise": PhysicalLevel("SNR (WM signal / noise std)", "", (40, 20, 10, 6, 4), _noise_std, True),
    "rician_noise": PhysicalLevel(
        "SNR (WM signal / std of each channel)", "", (40, 20, 10, 6, 4), _noise_std, True
    ),
    "speckle_noise": PhysicalLevel(
        "SNR of the multiplicative noise (1 / std)", "", (20, 10, 6, 4, 2.5), lambda v, c: {"std": 1.0 / v}
    ),
    "salt_pepper": PhysicalLevel(
        "fraction of voxels set to min / max", "", (0.005, 0.01, 0.02, 0.05, 0.1), lambda v, c: {"p": v}
    ),
    "gaussian_blur": PhysicalLevel("extra blur, FWHM", "mm", (2, 3, 5, 7, 10), _blur),
    "unsharp_mask": PhysicalLevel(
        "edge overshoot (amount, sigma 1 voxel)",
        "",
        (0.5, 1.0, 1.5, 2.0, 3.0),
        lambda v, c: {"amount": v, "sigma": 1.0},
    ),
    "gibbs": PhysicalLevel(
        "fraction of k-space kept per axis", "", (0.8, 0.6, 0.45, 0.35, 0.25), lambda v, c: {"keep": v}
    ),
    "spike": PhysicalLevel("stripe amplitude / WM signal", "", (0.05, 0.1, 0.2, 0.35, 0.5), _spike, True),
    "wrap_around": PhysicalLevel(
        "fraction of the FOV folded over (axis 1)",
        "",
        (0.1, 0.2, 0.3, 0.4, 0.5),
        lambda v, c: {"fraction": v, "axis": 1},
    ),
    "ghosting": PhysicalLevel(
        "ghost-to-signal ratio (N/2 ghost, axis 0)", "", (0.05, 0.1, 0.2, 0.35, 0.5), _ghosting
    ),
    "motion": PhysicalLevel(
        "rotation up to (and translation up to the same in mm)", "deg", (1, 2, 4, 6, 10), _motion
    ),
    "bias_field": PhysicalLevel(
        "peak multiplicative range (max / min inside the head)",
        "",
        (1.2, 1.4, 1.7, 2.0, 2.5),
        lambda v, c: {},
    ),
    "gamma": PhysicalLevel("gamma exponent", "", (1.25, 1.5, 2.0, 2.5, 3.0), lambda v, c: {"gamma": v}),
    "contrast": PhysicalLevel(
        "fraction of tissue contrast kept", "", (0.8, 0.6, 0.45, 0.3, 0.2), lambda v, c: {"factor": v}
    ),
    "low_resolution": PhysicalLevel("slice thickness (axis 0)", "mm", (2, 3, 5, 7, 10), _low_res),
    "rand_conv": PhysicalLevel(
        "share of the original image kept (random 3x3x3 conv)",
        "",
        (0.8, 0.6, 0.4, 0.2, 0.0),
        lambda v, c: {"alpha": v, "kernel_size": 3},
    ),
    "label_remap": PhysicalLevel(
        "share of per-tissue random intensities", "", (0.2, 0.4, 0.6, 0.8, 1.0), lambda v, c: {"mix": v}
    ),
}


def check_version(version: int, what: str = "severity_version") -> int:
    """``version`` as an int when it is a known severity table; else one line naming ``what`` (the
    config key, or a flag such as ``--severity-version``) and the valid versions."""
    if int(version) not in SEVERITY_VERSIONS:
        valid = ", ".join(map(str, SEVERITY_VERSIONS))
        raise InputError(f"{what} {version!r}: unknown severity table; valid versions: {valid}")
    return int(version)


def reference_intensity(image: Tensor, label: Tensor | None = None, wm_label: int | None = None) -> float:
    """The scan's reference signal: median intensity of the WM label, else of the head.

    With a label map and ``wm_label`` present (at least 10 voxels): the WM median. Otherwise the
    median of the head voxels: ``label > 0`` when a label map is given, else voxels above 10% of
    the 99th intensity percentile (a robust foreground mask for scans scaled to about [0, 1]).
    """
    x = image.detach().float().flatten()
    if label is not None:
        lab = label.detach().flatten().to(x.device)
        if wm_label is not None and int((lab == wm_label).sum()) >= 10:
            return float(x[lab == wm_label].median())
        if int((lab > 0).sum()) >= 10:
            return float(x[lab > 0].median())
    step = max(1, x.numel() // 1_000_000)
    hi = float(torch.quantile(x[::step], 0.99))
    fg = x[x > 0.1 * hi]
    return float(fg.median()) if fg.numel() else max(hi, 1e-6)


def head_mask(image: Tensor, label: Tensor | None = None) -> Tensor:
    """Boolean ``(D, H, W)`` head mask: ``label > 0``, else voxels above 10% of the 99th percentile."""
    x = image.detach().float().reshape(-1, *image.shape[-3:])[0]
    if label is not None and bool((label > 0).any()):
        return label.reshape(-1, *label.shape[-3:])[0] > 0
    step = max(1, x.numel() // 1_000_000)
    return x > 0.1 * float(torch.quantile(x.flatten()[::step], 0.99))


def physical_params(
    name: str, level: int, ctx: ScanContext, seed: int | None = None, head: Tensor | None = None
) -> dict[str, Any]:
    """Constructor kwargs of filter ``name`` at v2 ``level`` (1..5) for a scan described by ``ctx``.

    ``head`` (a boolean ``(D, H, W)`` mask, see :func:`head_mask`) is where the bias field's peak range
    is measured; ``None`` measures it over the whole volume.
    """
    from medaudit.texture import filters

    if name not in PHYSICAL:
        raise InputError(f"unknown corruption '{name}'; known: {', '.join(sorted(PHYSICAL))}")
    if not 1 <= int(level) <= 5:
        raise InputError(f"{name}: severity must be 0..5, got {level}")
    spec = PHYSICAL[name]
    params = spec.resolve(spec.values[int(level) - 1], ctx)
    if filters.FILTERS[name].stochastic:
        params["seed"] = seed
    if name == "bias_field":
        params = _bias_params(spec.values[int(level) - 1], ctx.shape, seed, head)
    return params


def _bias_params(
    peak_range: float, shape: Sequence[int], seed: int | None, head: Tensor | None = None
) -> dict[str, Any]:
    """Cubic bias-field coefficients drawn from ``seed``, scaled so that max/min of the field inside
    ``head`` (the whole volume when ``None`` or empty) is ``peak_range``."""
    from medaudit.texture.filters import BiasField

    unit = BiasField(magnitude=1.0, order=3, seed=seed)
    coef = unit.resolved_coefficients()
    log_field = unit.field(shape, dtype=torch.float64).log()
    if head is not None and bool(head.any()):
        log_field = log_field[head.to("cpu").reshape(log_field.shape)]
    span = float(log_field.max() - log_field.min())
    scale = math.log(peak_range) / max(span, 1e-12)
    return {"magnitude": 1.0, "order": 3, "coefficients": [c * scale for c in coef], "normalize": True}


def scan_context(
    image: Tensor,
    label: Tensor | None = None,
    spacing: Sequence[float] | None = None,
    wm_label: int | None = None,
) -> ScanContext:
    """:class:`ScanContext` of one scan ``(C, D, H, W)`` (spacing defaults to 1 mm)."""
    sp = tuple(float(s) for s in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
    return ScanContext(
        ref=reference_intensity(image, label, wm_label),
        spacing=sp,  # type: ignore[arg-type]
        shape=tuple(int(s) for s in image.shape[-3:]),  # type: ignore[arg-type]
        mean_abs=float(image.detach().abs().float().mean()),
    )


class PhysicalCorruption:
    """Corruption ``name`` at a v2 physical level; call ``fn(x, label=None)`` on ``(C,D,H,W)`` / ``(B,C,D,H,W)``.

    Each sample's parameters are resolved from its own :class:`ScanContext` (sample ``b`` uses seed
    ``seed + b``); ``last_records`` holds the applied ``{"name", "params"}`` per sample.
    """

    def __init__(
        self,
        name: str,
        level: int,
        seed: int | None = None,
        spacing: Sequence[float] | None = None,
        wm_label: int | None = None,
    ) -> None:
        self.name, self.level, self.seed = name, int(level), seed
        self.spacing, self.wm_label = spacing, wm_label
        self.last_records: list[dict[str, Any]] = []

    def __call__(self, x: Tensor, label: Tensor | None = None) -> Tensor:
        from medaudit.texture import filters

        x5, lab5 = (x[None], None if label is None else label[None]) if x.ndim == 4 else (x, label)
        outs, self.last_records = [], []
        for b in range(x5.shape[0]):
            lb = None if lab5 is None else lab5[b]
            seed = None if self.seed is None else int(self.seed) + b
            ctx = scan_context(x5[b], lb, self.spacing, self.wm_label)
            head = head_mask(x5[b], lb) if self.name == "bias_field" else None
            params = physical_params(self.name, self.level, ctx, seed, head)
            f = filters.make_filter(self.name, **params)
            out = f(x5[b], label=lb) if filters.FILTERS[self.name].needs_label else f(x5[b])
            outs.append(out)
            self.last_records.append(f.record())
        y = torch.stack(outs)
        return y[0] if x.ndim == 4 else y


def get_corruption(
    name: str,
    severity: int,
    seed: int | None = None,
    version: int = SEVERITY_VERSION,
    spacing: Sequence[float] | None = None,
    wm_label: int | None = None,
) -> Callable[..., Tensor]:
    """Corruption ``name`` at ``severity`` of table ``version`` (0 = identity)."""
    from medaudit.texture import filters

    if check_version(version) == 1 or int(severity) == 0:
        return filters.get_corruption(name, int(severity), seed=seed)
    return PhysicalCorruption(name, int(severity), seed, spacing, wm_label)


def describe(version: int = SEVERITY_VERSION) -> list[dict[str, Any]]:
    """One row per corruption: name, family, quantity, unit and the level 1..5 values (for docs / reports)."""
    from medaudit.texture import filters

    rows = []
    for name, spec in filters.FILTERS.items():
        if check_version(version) == 1:
            rows.append(
                {
                    "name": name,
                    "family": spec.family,
                    "quantity": "filter parameters",
                    "unit": "",
                    "levels": [dict(spec.severity[s]) for s in range(1, 6)],
                }
            )
        else:
            p = PHYSICAL[name]
            rows.append(
                {
                    "name": name,
                    "family": spec.family,
                    "quantity": p.quantity,
                    "unit": p.unit,
                    "levels": list(p.values),
                }
            )
    return rows


def with_version(results: Any, default: int = 1) -> Any:
    """A results table with a ``severity_version`` column (results written before it existed: ``default`` = 1)."""
    df = results.copy()
    if "severity_version" not in df.columns:
        df["severity_version"] = int(default)
    else:
        df["severity_version"] = df["severity_version"].fillna(default).astype(int)
    return df


def wm_label_of(label_set: Any) -> int | None:
    """Class index named ``WM`` in a label set (name or :class:`~medaudit.data.mri.LabelSet`), else None."""
    from medaudit.data.mri import get_label_set

    names = [str(n).lower() for n in get_label_set(label_set).class_names]
    return names.index("wm") if "wm" in names else None
