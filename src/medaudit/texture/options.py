"""The named choices of the texture commands, light enough to build ``--help`` without torch.

Each enum mirrors a registry that owns the behaviour (``tests/test_texture_options.py`` keeps them
equal): data sources (:mod:`medaudit.data.mri`), legacy training modes (:data:`medaudit.texture.train.MODES`),
recipes (:data:`medaudit.texture.recipes.RECIPES`) and input normalisations
(:data:`medaudit.texture.preprocess.INPUT_NORMS`).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DataSource", "InputNorm", "RecipeName", "TrainMode"]


class DataSource(StrEnum):
    mni_phantom = "mni-phantom"
    dhcp = "dhcp"
    folder = "folder"
    csv = "csv"


class TrainMode(StrEnum):
    clean = "clean"
    filtered = "filtered"
    online = "online"


class RecipeName(StrEnum):
    clean = "clean"
    filtered = "filtered"
    mixed = "mixed"
    bigaug = "bigaug"
    synthseg = "synthseg"
    gin = "gin"


class InputNorm(StrEnum):
    none = "none"
    zscore = "zscore"
    percentile = "percentile"
