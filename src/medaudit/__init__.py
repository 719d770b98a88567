"""medaudit: audit medical imaging classifiers by multimodal slice discovery, and harden 3D
segmentation models against texture shift.

The public Python API is exported here and imported on first use (``import medaudit`` stays cheap)::

    import medaudit

    result = medaudit.run_audit("cases.csv", medaudit.AuditConfig(meta=["view", "age"]), "audit-out")
    model = medaudit.train(medaudit.TrainConfig(iterations=500), "runs/clean")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    # audit (the product)
    "AuditConfig": "medaudit.audit.config",
    "ColumnMap": "medaudit.audit.config",
    "MODALITIES": "medaudit.audit.config",
    "DEFAULT_ENCODERS": "medaudit.audit.config",
    "run_audit": "medaudit.audit.pipeline",
    "AuditResult": "medaudit.audit.pipeline",
    "load_case_table": "medaudit.audit.table",
    "get_encoder": "medaudit.audit.encoders",
    "list_encoders": "medaudit.audit.encoders",
    "fuse": "medaudit.audit.fusion",
    "get_slicer": "medaudit.audit.slicers",
    "ErrorAwareMixtureSlicer": "medaudit.audit.slicers",
    "KMeansErrorSlicer": "medaudit.audit.slicers",
    # texture (the product)
    "TrainConfig": "medaudit.texture.train",
    "train": "medaudit.texture.train",
    "load_model": "medaudit.texture.train",
    "evaluate": "medaudit.texture.evaluate",
    "predict_files": "medaudit.texture.predict",
    "get_corruption": "medaudit.texture.filters",
    "list_corruptions": "medaudit.texture.filters",
    "make_filter": "medaudit.texture.filters",
    # studies that exercise the product
    "run_benchmark": "medaudit.studies.cxr_slices.benchmark",
    "BenchConfig": "medaudit.studies.cxr_slices.benchmark",
    "run_demo": "medaudit.studies.cxr_slices.demo",
    "run_study": "medaudit.studies.texture_robustness.study",
    "load_study_config": "medaudit.studies.texture_robustness.study",
    # shared base
    "InputError": "medaudit.errors",
    "wilson_ci": "medaudit.stats",
    "bootstrap_ci": "medaudit.stats",
    "bh_qvalues": "medaudit.stats",
}
_ALIASES = {"load_study_config": "load_config"}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'medaudit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
