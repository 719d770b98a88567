"""The benchmark cohort: loading it (phantom, MIMIC-CXR, CheXpert or a case table), embedding every
modality once (cached) and fingerprinting what a run's numbers depend on."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.errors import InputError
from medaudit.progress import make_progress
from medaudit.studies.cxr_slices.bench_config import DEFAULT_METADATA_COLUMNS, MODALITIES


def load_cohort(cohort: str, cache_dir: Path, n_cases: int | None = None) -> tuple[pd.DataFrame, str]:
    """Load the benchmark cohort as a case table; returns ``(df, kind)``.

    ``cohort`` is ``phantom`` (the embedded Open-i phantom, built under ``cache_dir``), ``mimic:<root>``,
    ``chexpert:<root>`` or a path to a case-table CSV/parquet (columns ``id``, ``image``, ``report``, labels
    and metadata).
    """
    if cohort == "phantom":
        from medaudit.data import phantom_cxr

        kw: dict[str, Any] = {}
        if n_cases is not None:
            kw["n"] = n_cases
        df = phantom_cxr.build_cohort(cache_dir, **kw)
        return df.reset_index(drop=True), "phantom"
    if ":" in cohort and not Path(cohort).exists():
        kind, root = cohort.split(":", 1)
        from medaudit.data import cxr

        readers = {"mimic": "read_mimic_cxr", "chexpert": "read_chexpert"}
        if kind not in readers or not hasattr(cxr, readers[kind]):
            raise InputError(
                f"cohort '{cohort}': expected phantom, mimic:<root>, chexpert:<root> or a table path"
            )
        df = getattr(cxr, readers[kind])(root)
        return _subsample(df, n_cases), kind
    path = Path(cohort)
    if not path.is_file():
        raise InputError(
            f"{path}: cohort table not found (or use 'phantom', 'mimic:<root>', 'chexpert:<root>')"
        )
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    for col in ("id", "image"):
        if col not in df.columns:
            raise InputError(f"{path}: missing column '{col}'")
    return _subsample(df, n_cases), "table"


def _subsample(df: pd.DataFrame, n: int | None) -> pd.DataFrame:
    if n is not None and n < len(df):
        df = df.sample(n=n, random_state=0)
    return df.reset_index(drop=True)


def embed_cohort(
    df: pd.DataFrame,
    cache_dir: Path,
    encoders: dict[str, str] | None = None,
    metadata_columns: Sequence[str] = DEFAULT_METADATA_COLUMNS,
    modalities: Sequence[str] = MODALITIES,
    encoder_params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Embed every case of ``df`` in each modality once (cached on disk by content).

    ``encoders`` maps a modality to a registered encoder name (default: the modality's default encoder),
    ``encoder_params`` to its keyword arguments.

    Fitted encoders (TF-IDF, tabular) are fitted on the whole cohort: unsupervised, no labels are seen.
    """
    from medaudit.audit.encoders import encode_cached, get_encoder

    encoders = encoders or {}
    ids = df["id"].astype(str).tolist()
    out: dict[str, np.ndarray] = {}
    meta_cols = [c for c in metadata_columns if c in df.columns]
    with make_progress() as prog:
        task = prog.add_task("embedding cohort", total=len(modalities))
        for m in modalities:
            enc = get_encoder(m, encoders.get(m), **(encoder_params or {}).get(m, {}))
            if m == "image":
                inputs: Any = df["image"].astype(str).tolist()
            elif m == "report":
                inputs = df["report"].fillna("").astype(str).tolist()
            else:
                if not meta_cols:
                    raise InputError(f"cohort has none of the metadata columns {', '.join(metadata_columns)}")
                inputs = df[meta_cols].reset_index(drop=True)
            if getattr(enc, "requires_fit", False):
                enc.fit(inputs)
            out[m] = np.asarray(encode_cached(enc, ids, inputs, cache_dir / "embeddings"), dtype=np.float32)
            prog.advance(task)
    return out


def cohort_fingerprint(df: pd.DataFrame, embeddings: dict[str, np.ndarray]) -> str:
    """Hash of the case ids, label/metadata columns and embeddings (what a run's numbers depend on)."""
    h = hashlib.sha256()
    h.update(
        pd.util.hash_pandas_object(
            df.drop(columns=["image"], errors="ignore").astype(str), index=False
        ).values
    )
    for m in sorted(embeddings):
        h.update(m.encode())
        h.update(np.ascontiguousarray(embeddings[m]).tobytes())
    return h.hexdigest()[:20]
