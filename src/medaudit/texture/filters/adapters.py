"""MONAI and TorchIO interoperability.

* Tensor-in / tensor-out filters already work inside ``monai.transforms.Compose`` (MetaTensor metadata is
  kept).  :class:`FilterD` is the MONAI dictionary version, :class:`LabelIntensityRemapD` the SynthSeg
  remap on ``{"image", "label"}``.
* :func:`as_torchio` wraps a filter into a ``tio.IntensityTransform`` so it joins ``tio.Compose`` and acts
  on every intensity image of a ``tio.Subject`` (the spatial axes 0, 1, 2 are then TorchIO's W, H, D).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Randomizable
from torch import Tensor

from medaudit.texture.filters.base import Filter, RandomFilter
from medaudit.texture.filters.randomization import LabelIntensityRemap, RandomLabelIntensityRemap

FilterLike = Filter | RandomFilter | Callable[[Tensor], Tensor]


class _Reseedable(Randomizable):
    """A MONAI ``Randomizable`` whose ``set_random_state`` reseeds the wrapped ``Random*`` filter, so
    ``Compose.set_random_state`` and ``monai.data.DataLoader`` workers reach it."""

    transform: Any

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> _Reseedable:
        super().set_random_state(seed, state)
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        if hasattr(self.transform, "randomize"):
            self.transform.randomize(data)


class FilterD(MapTransform, _Reseedable):
    """MONAI dictionary transform applying ``transform`` to each of ``keys``.

    A ``Random*`` transform is sampled once per call, so all keys get the same parameters; the applied
    record is stored under ``f"{key}_filter"`` when ``record=True``.  It is a MONAI ``Randomizable``:
    ``set_random_state`` reseeds the wrapped filter.
    """

    def __init__(
        self,
        keys: str | Sequence[Hashable],
        transform: FilterLike,
        allow_missing_keys: bool = False,
        record: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform
        self.record = record

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        t: Any = self.transform
        fixed = t.sample() if isinstance(t, RandomFilter) else t
        for key in self.key_iterator(d):
            d[key] = d[key] if fixed is None else fixed(d[key])
            if self.record:
                d[f"{key}_filter"] = fixed.record() if isinstance(fixed, Filter) else None
        return d


class LabelIntensityRemapD(MapTransform, _Reseedable):
    """SynthSeg-style remap of ``image_key`` driven by the label map in ``label_key``."""

    def __init__(
        self,
        transform: LabelIntensityRemap | RandomLabelIntensityRemap,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__((image_key,), allow_missing_keys=False)
        self.transform = transform
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.image_key] = self.transform(d[self.image_key], d.get(self.label_key))
        return d


def as_torchio(transform: FilterLike, **kwargs: Any) -> Any:
    """A ``tio.IntensityTransform`` applying ``transform`` to the data of each intensity image.

    ``kwargs`` go to TorchIO's ``Transform`` (``include``, ``exclude``, ``p``, ...).  For a ``Random*``
    filter one parameter set is drawn per subject; the applied records are kept in ``last_records`` and
    the transform appears in the subject's history.
    """
    import torchio as tio

    class TorchIOFilter(tio.IntensityTransform):
        def __init__(self, filt: FilterLike, **kw: Any) -> None:
            super().__init__(**kw)
            self.filt = filt
            self.args_names = ["filt"]
            self.last_records: list[dict[str, Any]] = []

        def apply_transform(self, subject: tio.Subject) -> tio.Subject:
            f: Any = self.filt
            fixed = f.sample() if isinstance(f, RandomFilter) else f
            self.last_records = []
            for image in self.get_images(subject):
                if fixed is None:
                    continue
                image.set_data(fixed(image.data))
                if isinstance(fixed, Filter):
                    self.last_records.append(fixed.record())
            return subject

    return TorchIOFilter(transform, **kwargs)
