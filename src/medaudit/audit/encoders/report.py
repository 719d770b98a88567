"""Report (free-text) encoders and MIMIC-style section extraction.

Registered (modality ``report``): ``tfidf-svd`` (default; fitted on the inputs), ``minilm``
(sentence-transformers all-MiniLM-L6-v2 from the package-shipped folder), ``hf`` (any local Hugging
Face model folder, mean pooling). All offline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medaudit.audit.encoders.base import as_list, hash_file, register_encoder, stable_hash
from medaudit.device import default_device
from medaudit.errors import InputError

KNOWN_SECTIONS = frozenset(
    {
        "findings",
        "finding",
        "impression",
        "impressions",
        "conclusion",
        "conclusions",
        "indication",
        "indications",
        "history",
        "clinical history",
        "clinical information",
        "comparison",
        "comparisons",
        "technique",
        "examination",
        "exam",
        "procedure",
        "reason for exam",
        "reason for examination",
        "recommendation",
        "recommendations",
        "wet read",
        "notification",
        "final report",
        "findings and impression",
        "findings/impression",
        "addendum",
    }
)
_ALIASES = {
    "finding": "findings",
    "impressions": "impression",
    "conclusions": "conclusion",
    "indications": "indication",
}
_HEADER = re.compile(r"(?:^|(?<=[\n.!?]))[ \t]*([A-Za-z][A-Za-z /&()-]{1,40}?)[ \t]*:", re.MULTILINE)


def extract_sections(text: str) -> dict[str, str]:
    """Split a radiology report into its sections, keyed by lower-case header name.

    Headers are ``NAME:`` at the start of a line or after a sentence end, where NAME is a known section
    (``FINDINGS``, ``IMPRESSION``, ``INDICATION``, ``COMPARISON`` ..., any case) or any all-capitals
    phrase (MIMIC-CXR style). Text before the first header goes under ``"preamble"``. Plural/singular
    variants are merged (``impressions`` -> ``impression``). Without any header the whole text is
    returned as ``{"full": text}``.
    """
    if not isinstance(text, str):
        text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    heads: list[tuple[int, int, str]] = []
    for m in _HEADER.finditer(text):
        raw = " ".join(m.group(1).split())
        key = raw.lower()
        if key in KNOWN_SECTIONS or (raw.isupper() and len(raw) >= 3):
            heads.append((m.start(1), m.end(), _ALIASES.get(key, key)))
    if not heads:
        return {"full": " ".join(text.split())}
    out: dict[str, str] = {}
    pre = " ".join(text[: heads[0][0]].split())
    if pre:
        out["preamble"] = pre
    for i, (_, end, key) in enumerate(heads):
        stop = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        body = " ".join(text[end:stop].split())
        out[key] = f"{out[key]} {body}".strip() if key in out else body
    return out


def select_sections(text: str, sections: Sequence[str] | None) -> str:
    """The requested sections of ``text`` joined with spaces, or the whole text if none is present.

    A requested name matches a header equal to it or containing it as a word (``"impression"`` matches
    ``"findings and impression"``). ``sections=None`` returns the whitespace-normalised text.
    """
    if not isinstance(text, str):
        text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    if not sections:
        return " ".join(text.split())
    secs = extract_sections(text)
    wanted = [_ALIASES.get(s.lower(), s.lower()) for s in sections]
    parts = []
    for key, body in secs.items():
        words = set(re.split(r"[ /&]+", key))
        if any(w == key or w in words for w in wanted) and body:
            parts.append(body)
    return " ".join(parts) if parts else " ".join(text.split())


def _quiet_transformers() -> None:
    """Hide transformers' weight-loading bars when medaudit is asked to be quiet (MEDAUDIT_QUIET=1)."""
    if os.environ.get("MEDAUDIT_QUIET", "") == "1":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _texts(inputs: Any, what: str) -> list[str]:
    items = as_list(inputs, what)
    out = []
    for i, t in enumerate(items):
        if t is None or (isinstance(t, float) and np.isnan(t)):
            out.append("")
        elif isinstance(t, str):
            out.append(t)
        else:
            raise InputError(f"{what}: row {i} is a {type(t).__name__}, expected a string")
    return out


class _TextEncoder:
    modality = "report"
    name = "text"
    requires_fit = False

    def __init__(self, sections: Sequence[str] | None = None) -> None:
        self.sections = tuple(sections) if sections else None

    def _prepare(self, inputs: Any) -> list[str]:
        return [select_sections(t, self.sections) for t in _texts(inputs, f"{self.name} report inputs")]

    def fit(self, inputs: Any = None) -> _TextEncoder:
        return self


class ReportVocabularyError(InputError):
    """The reports, all together, have too few distinct terms to embed (the caller names the column)."""


@register_encoder("report", "tfidf-svd")
class TfidfSVDEncoder(_TextEncoder):
    """TF-IDF over word 1-2-grams followed by truncated SVD (latent semantic analysis) to ``dim``.

    Fitted on the reports it is given (:meth:`fit`, or implicitly by the first :meth:`encode`). If the
    vocabulary or the number of reports is smaller than ``dim``, the width is reduced to what the data
    allows (``dim`` reports the fitted width).
    """

    name = "tfidf-svd"
    requires_fit = True

    def __init__(
        self,
        dim: int = 128,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int | float = 1,
        max_features: int | None = 100_000,
        sublinear_tf: bool = True,
        stop_words: str | None = None,
        sections: Sequence[str] | None = None,
        random_state: int = 0,
    ) -> None:
        super().__init__(sections)
        self.n_components = dim
        self.ngram_range = tuple(ngram_range)
        self.min_df = min_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf
        self.stop_words = stop_words
        self.random_state = random_state
        self.vectorizer_: Any = None
        self.svd_: Any = None
        self._key: str | None = None

    @property
    def is_fitted(self) -> bool:
        return self.svd_ is not None

    def fit(self, inputs: Any) -> TfidfSVDEncoder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if self.max_features is not None and self.max_features < 2:  # before any text is read
            raise InputError(
                f"tfidf-svd: max_features={self.max_features}; the encoder needs at least 2 terms"
            )
        texts = self._prepare(inputs)
        if len(texts) < 2:
            raise InputError("tfidf-svd: need at least 2 reports to fit")
        vec = TfidfVectorizer(
            ngram_range=self.ngram_range,
            min_df=self.min_df,
            max_features=self.max_features,
            sublinear_tf=self.sublinear_tf,
            stop_words=self.stop_words,
            dtype=np.float32,
        )
        try:
            x = vec.fit_transform(texts)
        except ValueError as exc:  # empty vocabulary
            raise ReportVocabularyError(f"tfidf-svd: cannot fit on these reports ({exc})") from exc
        if x.shape[1] < 2:  # TruncatedSVD needs two features
            raise ReportVocabularyError(
                f"tfidf-svd: the reports hold {x.shape[1]} distinct term(s) in all; at least 2 are needed "
                "(leave 'report' out of --modalities)"
            )
        k = max(1, min(self.n_components, x.shape[1] - 1, x.shape[0] - 1))
        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=self.random_state)
        with np.errstate(divide="ignore", invalid="ignore"):  # identical reports: explained variance 0/0
            svd.fit(x)
        self.vectorizer_, self.svd_ = vec, svd
        self._key = None
        return self

    @property
    def dim(self) -> int:
        if self.svd_ is None:
            raise InputError("tfidf-svd: dim is known only after fit()")
        return int(self.svd_.n_components)

    def encode(self, inputs: Any) -> np.ndarray:
        """Embed reports; fits on them first if the encoder is not fitted yet."""
        if self.svd_ is None:
            self.fit(inputs)
        texts = self._prepare(inputs)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.svd_.transform(self.vectorizer_.transform(texts)).astype(np.float32)

    def cache_key(self) -> str:
        """Hash of the config and the fitted vocabulary, IDF weights and SVD components."""
        if self.svd_ is None:
            raise InputError("tfidf-svd: fit() before asking for cache_key()")
        if self._key is None:
            vocab = sorted(self.vectorizer_.vocabulary_.items())
            self._key = stable_hash(
                self.name,
                self.ngram_range,
                self.min_df,
                self.max_features,
                self.sublinear_tf,
                self.stop_words,
                self.sections,
                vocab,
                self.vectorizer_.idf_,
                self.svd_.components_,
            )
        return self._key


def _folder_hash(folder: Path) -> str:
    """Hash of a model folder: relative names and sizes of all files, plus the bytes of weight files."""
    parts: list[Any] = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model"):
            parts.append((rel, hash_file(f)))
        else:
            parts.append((rel, f.stat().st_size))
    return stable_hash(parts)


@register_encoder("report", "minilm")
class MiniLMEncoder(_TextEncoder):
    """sentence-transformers all-MiniLM-L6-v2 (384-d, L2-normalised), loaded offline.

    Args:
        model_dir: the sentence-transformers folder; default the package-shipped copy
            (``medaudit.data.assets.minilm_model_dir()``).
        sections: report sections to keep before encoding (e.g. ``("findings", "impression")``).
    """

    name = "minilm"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        sections: Sequence[str] | None = None,
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        super().__init__(sections)
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._key: str | None = None

    def _folder(self) -> Path:
        if self.model_dir is None:
            from medaudit.data.assets import minilm_model_dir

            return minilm_model_dir()
        p = Path(self.model_dir).expanduser()
        if not p.is_dir():
            raise InputError(f"{p}: sentence-transformers model folder not found")
        return p

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            folder = self._folder()
            _quiet_transformers()
            try:
                self._model = SentenceTransformer(
                    str(folder), device=str(default_device(self.device)), local_files_only=True
                )
            except Exception as exc:
                raise InputError(f"{folder}: cannot load sentence-transformers model ({exc})") from exc
            self._model.eval()
        return self._model

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def encode(self, inputs: Any) -> np.ndarray:
        texts = self._prepare(inputs)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(
            texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(emb, dtype=np.float32)

    def cache_key(self) -> str:
        if self._key is None:
            self._key = stable_hash(self.name, self.sections, _folder_hash(self._folder()))
        return self._key


@register_encoder("report", "hf")
class HFMeanPoolEncoder(_TextEncoder):
    """Any local Hugging Face encoder folder (``transformers.AutoModel``), attention-masked mean pooling.

    Args:
        model_dir: local folder with config, tokenizer and weights (never downloaded).
        max_length: tokens per report (longer reports are truncated).
        normalize: L2-normalise the pooled embeddings.
    """

    name = "hf"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        sections: Sequence[str] | None = None,
        max_length: int = 512,
        normalize: bool = False,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        super().__init__(sections)
        self.model_dir = model_dir
        self.max_length = max_length
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._tok: Any = None
        self._key: str | None = None

    def _folder(self) -> Path:
        p = Path(self.model_dir).expanduser()
        if not p.is_dir():
            raise InputError(f"{p}: Hugging Face model folder not found (only local folders are used)")
        return p

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            folder = self._folder()
            _quiet_transformers()
            try:
                self._tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                self._model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            except Exception as exc:
                raise InputError(f"{folder}: cannot load Hugging Face model ({exc})") from exc
            self._model.eval().to(default_device(self.device))

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    def encode(self, inputs: Any) -> np.ndarray:
        import torch

        texts = self._prepare(inputs)
        self._load()
        dev = default_device(self.device)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tok = self._tok(
                    texts[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(dev)
                hidden = self._model(**tok).last_hidden_state
                mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def cache_key(self) -> str:
        if self._key is None:
            cfg = (self.sections, self.max_length, self.normalize)
            self._key = stable_hash(self.name, cfg, _folder_hash(self._folder()))
        return self._key
