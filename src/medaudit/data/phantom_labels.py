"""The phantom cohort's labels and device kinds, read from each report by the audit's concept extractor.

One home for "what a report says": the labels that the phantom cohort trains and scores on, the
hardware its renderer draws, and the concepts the audit explains slices with all come from the same
negation- and uncertainty-aware extractor (:mod:`medaudit.audit.concepts`, default lexicon), OR-ed
with the human-assigned MeSH major headings (:data:`medaudit.data.cxr.openi.MESH_RULES`). So a report
that the audit reads as "mentions sternotomy wires" is a support-device case in the cohort, and its
radiograph shows the wires; a rule ``report mentions support device ∧ label = 0`` then names the
planted cases exactly, not a near match.

Positive = the concept is mentioned or uncertain (a hedged finding counts, as in the U-ones policy);
denied or absent = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medaudit.data.cxr.openi import FINDING_LABELS, MESH_DEVICE_KIND, MESH_RULES, OPENI_LABELS

__all__ = ["CONCEPTS_OF_LABEL", "DEVICE_KIND_CONCEPTS", "concept_device_kinds", "concept_labels"]

#: cohort label -> lexicon concepts whose positive mention sets it.
CONCEPTS_OF_LABEL: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly",),
    "pleural_effusion": ("pleural effusion",),
    "opacity": ("lung opacity", "consolidation", "pneumonia"),
    "atelectasis": ("atelectasis",),
    "pneumothorax": ("pneumothorax",),
    "edema": ("edema",),
    "nodule": ("nodule", "lung lesion"),
    "fracture": ("fracture",),
    "emphysema": ("emphysema",),
    "support_devices": ("support device",),
}
#: renderer device kind -> lexicon device concept.
DEVICE_KIND_CONCEPTS: dict[str, str] = {
    "pacemaker": "pacemaker or leads",
    "line": "line or catheter",
    "tube": "tube",
    "wires": "sternotomy wires or clips",
    "port": "port",
}
_POSITIVE = (1, 2)


def _heads(mesh: Sequence[str] | None) -> set[str]:
    return {str(m).split("/")[0].strip() for m in (mesh if mesh is not None else [])}


def concept_labels(codes: pd.DataFrame, mesh_major: Sequence[Sequence[str] | None]) -> pd.DataFrame:
    """The cohort's label columns (:data:`OPENI_LABELS`) from concept codes and MeSH major headings."""
    heads = [_heads(m) for m in mesh_major]
    out = pd.DataFrame(index=codes.index)
    for lab, concepts in CONCEPTS_OF_LABEL.items():
        present = [c for c in concepts if c in codes.columns]
        by_text = codes[present].isin(_POSITIVE).any(axis=1).to_numpy() if present else False
        by_mesh = np.array([any(h in hs for h in MESH_RULES[lab]) for hs in heads], dtype=bool)
        out[lab] = (by_text | by_mesh).astype(int)
    out["no_finding"] = (~out[list(FINDING_LABELS)].astype(bool).any(axis=1)).astype(int)
    return out[list(OPENI_LABELS)]


def concept_device_kinds(codes: pd.DataFrame, mesh_major: Sequence[Sequence[str] | None]) -> list[str]:
    """Per report, the device kinds the renderer draws (``"line|wires"``), from the device concepts
    mentioned and the device MeSH headings; empty when none is named."""
    out = []
    for i, mesh in enumerate(mesh_major):
        kinds = {k for k, c in DEVICE_KIND_CONCEPTS.items() if c in codes and codes[c].iat[i] == 1}
        kinds |= {MESH_DEVICE_KIND[h] for h in _heads(mesh) if h in MESH_DEVICE_KIND}
        out.append("|".join(sorted(kinds)))
    return out
