"""Modality encoders (image, report, metadata), their registry, and an on-disk resumable cache.

>>> from medaudit.audit.encoders import get_encoder, encode_cached
>>> enc = get_encoder("report", "tfidf-svd", dim=64)
>>> emb = encode_cached(enc, ids, reports, "cache/")  # doctest: +SKIP
"""

from __future__ import annotations

from medaudit.audit.encoders import image as _image  # noqa: F401  (registers the image encoders)
from medaudit.audit.encoders import metadata as _metadata  # noqa: F401  (registers the metadata encoders)
from medaudit.audit.encoders import report as _report  # noqa: F401  (registers the report encoders)
from medaudit.audit.encoders.base import (
    DEFAULT_ENCODERS,
    MODALITIES,
    Encoder,
    encoder_accepts,
    get_encoder,
    list_encoders,
    register_encoder,
    stable_hash,
)
from medaudit.audit.encoders.cache import cache_folder, encode_cached, item_keys
from medaudit.audit.encoders.image import (
    EfficientNetLite0Encoder,
    OpenCLIPEncoder,
    TorchImageEncoder,
    TorchModuleEncoder,
    XRVDenseNetEncoder,
)
from medaudit.audit.encoders.metadata import SentenceMetadataEncoder, TabularEncoder
from medaudit.audit.encoders.report import (
    HFMeanPoolEncoder,
    MiniLMEncoder,
    TfidfSVDEncoder,
    extract_sections,
    select_sections,
)

__all__ = [
    "DEFAULT_ENCODERS",
    "MODALITIES",
    "EfficientNetLite0Encoder",
    "Encoder",
    "HFMeanPoolEncoder",
    "MiniLMEncoder",
    "OpenCLIPEncoder",
    "SentenceMetadataEncoder",
    "TabularEncoder",
    "TfidfSVDEncoder",
    "TorchImageEncoder",
    "TorchModuleEncoder",
    "XRVDenseNetEncoder",
    "cache_folder",
    "encode_cached",
    "encoder_accepts",
    "extract_sections",
    "get_encoder",
    "item_keys",
    "list_encoders",
    "register_encoder",
    "select_sections",
    "stable_hash",
]
