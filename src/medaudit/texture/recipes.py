"""Training recipes: batched texture / corruption transforms applied to patch batches on the training device.

A recipe is chosen by name (``medaudit texture train --recipe NAME``, ``recipe:`` in a training or
study config) with options (``recipe_options``):

=============  ==================================================================================
``clean``      no transform (the baseline)
``filtered``   the study's protocol, kept as its reproduction: a filtered copy of the training scans
               is the training set (done once, before training; nothing happens per batch)
``mixed``      each sample of a batch is transformed with probability ``p`` by one corruption drawn
               from the pool at a random level; the others stay clean
``bigaug``     BigAug-style stacking (Zhang et al., IEEE TMI 2020): with probability ``p`` a sample
               gets ``k`` corruptions from ``k`` distinct families, random levels, random order
``synthseg``   SynthSeg-style synthesis (Billot et al. 2023): each label's intensities from a random
               Gaussian, then blur, a bias field and noise (the label map comes with the batch)
``gin``        GIN (Ouyang et al., arXiv 2111.12525): a random shallow conv net with leaky-ReLUs,
               mixed with the input at a random weight and rescaled to its mean / std
=============  ==================================================================================

Common options: ``p`` (the fraction of each batch that is transformed, see :meth:`Recipe.chosen`;
the rest of the batch stays clean),
``severity`` (``[lo, hi]`` levels drawn uniformly, of the severity table ``severity_version``),
``families`` / ``filters`` (the pool of corruptions, default every family but ``texture``) and
``exclude_families`` (leave-one-family-out: those families are never used, including inside
synthseg's blur / bias / noise steps). ``k`` is bigaug's number of stacked transforms.

All randomness of iteration ``i`` comes from the seed the training loop passes (derived from
``(seed, "recipe", i)``), so a run is reproducible and a resumed run is bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medaudit.errors import InputError
from medaudit.texture.severity import SEVERITY_VERSION, check_version, get_corruption

RECIPE_NAMES = ("clean", "filtered", "mixed", "bigaug", "synthseg", "gin")
_MAX_SEED = 2**31 - 1


def _draw(g: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (1,), generator=g))


def _seed(g: torch.Generator) -> int:
    return int(torch.randint(0, _MAX_SEED, (1,), generator=g))


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def excluded_families(options: Mapping[str, Any], who: str) -> tuple[str, ...]:
    """The ``exclude_families`` option: a list of family names (none when absent); a number, mapping or
    plain string (which would be read letter by letter) is an :class:`InputError` naming ``who``."""
    excl = options.get("exclude_families")
    excl = [] if excl is None else excl
    if not isinstance(excl, list | tuple) or not all(isinstance(f, str) for f in excl):
        raise InputError(
            f"{who}: option 'exclude_families' must be a list of family names "
            f'(e.g. ["noise"]), got {excl!r:.60}'
        )
    return tuple(excl)


class Recipe:
    """Base recipe: ``recipe(x, y, seed)`` on a patch batch ``x (B,1,D,H,W)`` float, ``y (B,1,D,H,W)`` int."""

    name: ClassVar[str] = "clean"
    default_p: ClassVar[float] = 0.0
    own_families: ClassVar[tuple[str, ...]] = ()
    _OPTIONS: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        severity_version: int = SEVERITY_VERSION,
        spacing: Sequence[float] | None = None,
        wm_label: int | None = None,
    ) -> None:
        opts = dict(options or {})
        allowed = {"p", "exclude_families"} | set(self._OPTIONS)
        bad = sorted(set(opts) - allowed)
        if bad:
            raise InputError(f"recipe '{self.name}': unknown option(s) {bad}; allowed: {sorted(allowed)}")
        p = opts.get("p", self.default_p)
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
            raise InputError(f"recipe '{self.name}': p must be a number in [0, 1], got {p!r}")
        self.p = float(p)
        self.exclude = excluded_families(opts, f"recipe '{self.name}'")
        _check_families(self.exclude, f"recipe '{self.name}': exclude_families")
        self.options = opts
        self.severity_version = check_version(severity_version)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.wm_label = wm_label

    def train_families(self) -> list[str]:
        """Corruption families that this recipe's transforms belong to (the 'seen' families)."""
        return [f for f in self.own_families if f not in self.exclude]

    def chosen(self, batch: int, g: torch.Generator) -> list[int]:
        """Indices of the samples to transform: ``floor(p * B + u)`` of them (``u ~ U(0, 1)``, so a
        fraction ``p`` on average), picked at random. Every batch therefore mixes clean and
        transformed samples as evenly as its size allows (with B = 2 and p = 0.5: one of each)."""
        n = int(self.p * batch + float(torch.rand((), generator=g, dtype=torch.float64)))
        return sorted(torch.randperm(batch, generator=g)[: min(n, batch)].tolist())

    def __call__(self, x: Tensor, y: Tensor, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        idx = self.chosen(x.shape[0], g)
        if not idx:
            return x
        out = x.clone()
        out[idx] = self.transform(x[idx], y[idx], g).to(x.dtype)
        return out

    def transform(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tensor:
        return x

    def range_option(self, key: str, default: Sequence[float]) -> tuple[float, float]:
        """Option ``key`` as a ``(lo, hi)`` range (a number ``v`` means ``(v, v)``)."""
        v = self.options.get(key, default)
        v = [v, v] if isinstance(v, int | float) and not isinstance(v, bool) else v
        if not isinstance(v, list | tuple) or len(v) != 2 or not all(isinstance(a, int | float) for a in v):
            raise InputError(f"recipe '{self.name}': option '{key}' must be a number or [lo, hi], got {v!r}")
        if not all(math.isfinite(float(a)) and float(a) >= 0 for a in v):
            raise InputError(f"recipe '{self.name}': option '{key}' must be finite and >= 0, got {v!r}")
        if float(v[0]) > float(v[1]):
            raise InputError(f"recipe '{self.name}': option '{key}' has lo > hi: {v!r}")
        return float(v[0]), float(v[1])

    def corrupt(self, name: str, level: int, x: Tensor, y: Tensor, seed: int) -> Tensor:
        fn = get_corruption(name, level, seed, self.severity_version, self.spacing, self.wm_label)
        from medaudit.texture import filters

        if filters.FILTERS[name].needs_label:
            return fn(x, label=y)
        return fn(x)

    def describe(self) -> str:
        """Short label for reports: ``bigaug`` or ``bigaug[-noise]``."""
        return self.name + (f"[-{','.join(self.exclude)}]" if self.exclude else "")


def _check_families(fams: Sequence[str], what: str) -> None:
    from medaudit.texture.filters import FAMILIES

    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        raise InputError(f"{what}: unknown famil(ies) {bad}; known: {', '.join(FAMILIES)}")


class Clean(Recipe):
    name = "clean"


class Filtered(Recipe):
    """The filtered-copy protocol: the training volumes are filtered once in ``_prepare_volumes``."""

    name = "filtered"
    _OPTIONS = frozenset({"filter", "severity"})

    def __init__(self, options: Mapping[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(options, **kw)
        from medaudit.texture.filters import FILTERS

        f, sev = self.options.get("filter"), self.options.get("severity", [0, 0])
        if f is not None and f not in FILTERS:  # 'none' too: a filtered copy needs a filter
            raise InputError(f"filter_name {f!r}: unknown filter; known: {', '.join(sorted(FILTERS))}")
        if not (isinstance(sev, list) and len(sev) == 2 and 0 <= sev[0] <= sev[1] <= 5):
            raise InputError(f"filter_severity {sev!r}: give a level 0..5 or a range [lo, hi] with lo <= hi")
        if f is not None and sev[0] < 1:  # level 0 is the identity: a 'filtered' copy that is the clean one
            raise InputError(
                f"filter_severity {sev!r}: a filter's levels are 1..5 (0 would leave the scans clean)"
            )

    def train_families(self) -> list[str]:
        from medaudit.texture.filters import family_of

        f = self.options.get("filter")
        return [family_of(str(f))] if f else []


class _PoolRecipe(Recipe):
    """Recipes drawing corruptions from a pool (registry filters) at random levels."""

    _OPTIONS = frozenset({"families", "filters", "severity"})
    default_families: ClassVar[tuple[str, ...]] = (
        "noise", "blur", "sharpen", "kspace", "motion", "bias", "intensity", "resolution",
    )  # fmt: skip

    def __init__(self, options: Mapping[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(options, **kw)
        from medaudit.texture import filters

        for key in ("filters", "families"):
            v = self.options.get(key)
            if v is not None and (not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v)):
                raise InputError(
                    f"recipe '{self.name}': option '{key}' must be a non-empty list of names (leave it out "
                    f"for the default pool), got {v!r}"
                )
        names = self.options.get("filters")
        if names:
            unknown = [n for n in names if n not in filters.FILTERS]
            if unknown:
                raise InputError(f"recipe '{self.name}': unknown filter(s) {unknown}")
            pool = [str(n) for n in names]
        else:
            fams = tuple(self.options.get("families") or self.default_families)
            _check_families(fams, f"recipe '{self.name}': families")
            pool = [n for n in filters.FILTERS if filters.family_of(n) in fams]
        self.pool = [n for n in pool if filters.family_of(n) not in self.exclude]
        if not self.pool:
            raise InputError(f"recipe '{self.name}': no corruption left in the pool after exclusions")
        sev = self.options.get("severity", [1, 5])
        sev = [sev, sev] if isinstance(sev, int) and not isinstance(sev, bool) else sev
        if (
            not isinstance(sev, list | tuple)
            or len(sev) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in sev)
            or not 1 <= sev[0] <= sev[1] <= 5
        ):
            raise InputError(
                f"recipe '{self.name}': severity must be a level or [lo, hi] in 1..5, got {sev!r}"
            )
        self.levels = (int(sev[0]), int(sev[1]))

    def train_families(self) -> list[str]:
        from medaudit.texture.filters import family_of

        return sorted({family_of(n) for n in self.pool})

    def level(self, g: torch.Generator) -> int:
        return self.levels[0] + _draw(g, self.levels[1] - self.levels[0] + 1)

    def apply_plans(self, x: Tensor, y: Tensor, plans: list[list[tuple[str, int, int]]]) -> Tensor:
        """Apply per-sample lists of ``(filter, level, seed)`` stage by stage, batching equal steps."""
        out = x
        for stage in range(max(len(p) for p in plans)):
            nxt = out.clone()
            groups: dict[tuple[str, int], list[int]] = {}
            for b, plan in enumerate(plans):
                if stage < len(plan):
                    groups.setdefault(plan[stage][:2], []).append(b)
            for (name, level), idx in groups.items():
                seed = plans[idx[0]][stage][2]
                nxt[idx] = self.corrupt(name, level, out[idx], y[idx], seed).to(out.dtype)
            out = nxt
        return out


class Mixed(_PoolRecipe):
    """With probability ``p`` (default 0.5) a sample gets one corruption from the pool."""

    name = "mixed"
    default_p = 0.5

    def transform(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tensor:
        plans = [[(self.pool[_draw(g, len(self.pool))], self.level(g), _seed(g))] for _ in range(x.shape[0])]
        return self.apply_plans(x, y, plans)


class BigAug(_PoolRecipe):
    """With probability ``p`` (default 0.8) a sample gets ``k`` (default 3) stacked corruptions from
    distinct families, each at a random level, composed in a random order."""

    name = "bigaug"
    default_p = 0.8
    _OPTIONS = _PoolRecipe._OPTIONS | {"k"}

    def __init__(self, options: Mapping[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(options, **kw)
        from medaudit.texture.filters import family_of

        self.by_family: dict[str, list[str]] = {}
        for n in self.pool:
            self.by_family.setdefault(family_of(n), []).append(n)
        k = self.options.get("k", 3)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.by_family):
            raise InputError(
                f"recipe 'bigaug': k must be an integer in 1..{len(self.by_family)} (families in the pool), "
                f"got {k!r}"
            )
        self.k = k

    def plan(self, g: torch.Generator) -> list[tuple[str, int, int]]:
        fams = sorted(self.by_family)
        order = torch.randperm(len(fams), generator=g)[: self.k].tolist()  # k distinct, random order
        out = []
        for i in order:
            names = self.by_family[fams[i]]
            out.append((names[_draw(g, len(names))], self.level(g), _seed(g)))
        return out

    def transform(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tensor:
        return self.apply_plans(x, y, [self.plan(g) for _ in range(x.shape[0])])


class SynthSeg(Recipe):
    """With probability ``p`` (default 0.8): per-label Gaussian intensities (``LabelIntensityRemap``),
    blur ``sigma ~ U(blur)`` voxels, a bias field of ``magnitude ~ U(bias)``, then Gaussian noise of
    ``std ~ U(noise)`` (in units of the sample's intensity range)."""

    name = "synthseg"
    default_p = 0.8
    own_families = ("texture", "blur", "bias", "noise")
    _OPTIONS = frozenset({"blur", "bias", "noise"})

    def __init__(self, options: Mapping[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(options, **kw)
        for key in ("blur", "bias", "noise"):  # validate now, not at the first batch
            self.range_option(key, [0.0, 0.0])

    def transform(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tensor:
        from medaudit.texture.filters import GaussianNoise, LabelIntensityRemap

        off = (0.0, 0.0)
        blur = self.range_option("blur", [0.0, 1.0]) if "blur" not in self.exclude else off
        bias = self.range_option("bias", [0.0, 0.3]) if "bias" not in self.exclude else off
        noise = self.range_option("noise", [0.0, 0.05]) if "noise" not in self.exclude else off
        outs = []
        for b in range(x.shape[0]):
            remap = LabelIntensityRemap(
                mix=1.0, blur_sigma=_u(g, *blur), bias_magnitude=_u(g, *bias), seed=_seed(g)
            )
            xb = remap(x[b], y[b])
            std, seed = _u(g, *noise), _seed(g)
            outs.append(GaussianNoise(std=std, seed=seed)(xb) if std > 0 else xb)
        return torch.stack(outs)


class GIN(Recipe):
    """Global intensity non-linear augmentation (Ouyang et al.): with probability ``p`` (default 0.8)
    a random ``layers``-layer conv net (``hidden`` channels, kernel sizes 1 or 3, leaky-ReLU 0.2,
    Kaiming-normal weights drawn per sample) maps the patch; ``alpha ~ U(0, 1)`` mixes it with the
    input and the result is rescaled to the input's mean / std (computed batched as a grouped conv)."""

    name = "gin"
    default_p = 0.8
    own_families = ("texture",)
    _OPTIONS = frozenset({"layers", "hidden", "alpha"})

    def __init__(self, options: Mapping[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(options, **kw)
        if self.range_option("alpha", [0.0, 1.0])[1] > 1.0:  # a mixing weight
            raise InputError(
                f"recipe 'gin': option 'alpha' must lie in [0, 1], got {self.options['alpha']!r}"
            )
        for key in ("layers", "hidden"):
            v = self.options.get(key, 4)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"recipe 'gin': option '{key}' must be an integer >= 1, got {v!r}")
        if "texture" in self.exclude:  # its only family: every sample would stay clean
            raise InputError(
                "recipe 'gin': no corruption left after exclusions (exclude_families removes 'texture', "
                "its only family; that is the clean baseline)"
            )

    def transform(self, x: Tensor, y: Tensor, g: torch.Generator) -> Tensor:
        from medaudit.texture.filters.randomization import _match_moments

        n, c = x.shape[0], x.shape[1]
        hidden, layers = int(self.options.get("hidden", 4)), int(self.options.get("layers", 4))
        h = x.reshape(1, n * c, *x.shape[2:])
        cin = c
        for layer in range(layers):
            cout = c if layer == layers - 1 else hidden
            ks = (1, 3)[_draw(g, 2)]
            w = torch.randn((n * cout, cin, ks, ks, ks), generator=g, dtype=torch.float64)
            w = (w / (cin * ks**3) ** 0.5).to(device=x.device, dtype=x.dtype)
            h = F.conv3d(F.pad(h, (ks // 2,) * 6, mode="replicate") if ks > 1 else h, w, groups=n)
            if layer < layers - 1:
                h = F.leaky_relu(h, 0.2)
            cin = cout
        gin = _match_moments(h.reshape(x.shape), x)
        lo, hi = self.range_option("alpha", [0.0, 1.0])
        alpha = torch.tensor([_u(g, lo, hi) for _ in range(n)], dtype=x.dtype, device=x.device)
        mixed = alpha.view(-1, 1, 1, 1, 1) * gin + (1 - alpha.view(-1, 1, 1, 1, 1)) * x
        return _match_moments(mixed, x)


RECIPES: dict[str, type[Recipe]] = {
    r.name: r for r in (Clean, Filtered, Mixed, BigAug, SynthSeg, GIN)
}  # fmt: skip


def make_recipe(
    name: str,
    options: Mapping[str, Any] | None = None,
    severity_version: int = SEVERITY_VERSION,
    spacing: Sequence[float] | None = None,
    wm_label: int | None = None,
) -> Recipe:
    """The recipe ``name`` with ``options`` (raises :class:`InputError` for unknown names / options)."""
    if name not in RECIPES:
        raise InputError(f"unknown training recipe '{name}'; choose one of {list(RECIPES)}")
    return RECIPES[name](options, severity_version=severity_version, spacing=spacing, wm_label=wm_label)
