"""Per-concept precision / recall of report concept extraction against Open-i's human MeSH major tags.

Open-i's MeSH *major* terms were assigned by human indexers; they ship with the reports bundled in
torchxrayvision (NLMCXR_reports.tgz, read by medaudit.data.cxr.openi). For every concept that both
cover, a report is MeSH-positive when one of the concept's headings (text before the first "/") is
among its major terms; it is extractor-positive when the concept's code is 1 (mentioned, affirmed).
Reports without FINDINGS or IMPRESSION text are left out.

Compared: the text rules behind the phantom cohort's labels today (medaudit.data.cxr.openi.TEXT_RULES,
on the text alone), medaudit's own extractor (NegEx scope from medaudit.audit.explain + ConText-style hedges)
and negspacy 1.1 (NegEx, "en_clinical" termset) on a blank spaCy English pipeline with a sentencizer
and an entity ruler built from the same lexicon (no model download). Writes
bench/results/concepts_vs_mesh.{json,md}.

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/concepts_vs_mesh.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medaudit.audit.concepts import default_lexicon, extract_concepts
from medaudit.audit.concepts.lexicon import _WORD, Lexicon
from medaudit.data.cxr.openi import TEXT_RULES, affirmed_mentions, load_openi_reports

#: concept -> the Open-i label whose text rule (medaudit.data.cxr.openi.TEXT_RULES) the phantom cohort's
#: labels use today (OR-ed there with MeSH); compared here on the text alone.
COHORT_RULE = {
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "pleural_effusion",
    "nodule": "nodule",
    "emphysema": "emphysema",
    "atelectasis": "atelectasis",
    "pneumothorax": "pneumothorax",
    "edema": "edema",
    "fracture": "fracture",
    "lung opacity": "opacity",
    "support device": "support_devices",
}

#: concept -> MeSH major headings (before "/"); "Heading/qualifier" entries match the full term prefix.
MESH: dict[str, tuple[str, ...]] = {
    "no finding": ("normal",),
    "cardiomegaly": ("Cardiomegaly", "Cardiac Shadow/enlarged"),
    "pleural effusion": ("Pleural Effusion",),
    "granuloma": ("Calcified Granuloma", "Granulomatous Disease", "Granuloma"),
    "emphysema": (
        "Emphysema",
        "Pulmonary Emphysema",
        "Pulmonary Disease, Chronic Obstructive",
        "Bullous Emphysema",
        "Lung/hyperdistention",
    ),
    "scoliosis": ("Scoliosis",),
    "hiatal hernia": ("Hernia, Hiatal",),
    "nodule": ("Nodule",),
    "lung lesion": ("Mass",),
    "atelectasis": ("Pulmonary Atelectasis",),
    "lung opacity": ("Opacity", "Airspace Disease", "Infiltrate", "Density"),
    "edema": ("Pulmonary Edema", "Pulmonary Congestion"),
    "consolidation": ("Consolidation",),
    "pneumonia": ("Pneumonia",),
    "pneumothorax": ("Pneumothorax",),
    "fracture": ("Fractures, Bone",),
    "degenerative change": (
        "Osteophyte",
        "Spondylosis",
        "Arthritis",
        "Thoracic Vertebrae/degenerative",
        "Spine/degenerative",
    ),
    "pleural other": ("Thickening/pleura",),
    "atherosclerosis": ("Atherosclerosis",),
    "osteopenia": ("Bone Diseases, Metabolic",),
    "low lung volumes": ("Lung/hypoinflation",),
    "tortuous aorta": ("Aorta/tortuous",),
    "line or catheter": ("Catheters, Indwelling",),
    "tube": ("Tube, Inserted",),
    "sternotomy wires or clips": ("Surgical Instruments", "Sutures"),
    "support device": (
        "Catheters, Indwelling",
        "Implanted Medical Device",
        "Medical Device",
        "Tube, Inserted",
        "Stents",
        "Surgical Instruments",
        "Pacemaker, Artificial",
        "Defibrillators, Implantable",
    ),
    # added 2026-12-02 with the lexicon's concepts for Open-i's frequent uncovered headings
    "calcification": ("Calcinosis",),
    "scarring": ("Cicatrix",),
    "fibrosis": ("Pulmonary Fibrosis", "Lung Diseases, Interstitial"),
    "prominent lung markings": ("Markings",),
    "elevated hemidiaphragm": ("Diaphragm/right/elevated", "Diaphragm/left/elevated", "Diaphragm/elevated"),
    "flattened diaphragm": ("Diaphragm/bilateral/flattened", "Diaphragm/flattened"),
    "eventration": ("Diaphragmatic Eventration",),
    "kyphosis": ("Kyphosis",),
    "vertebral deformity": ("Deformity",),
    "spinal fusion or hardware": ("Spinal Fusion",),
    "foreign body": ("Foreign Bodies",),
    "limited technique": ("Technical Quality of Image Unsatisfactory",),
    "costophrenic blunting": ("Costophrenic Angle",),
    "lucency": ("Lucency",),
}


def mesh_matrix(mesh_major: pd.Series) -> pd.DataFrame:
    out = {}
    for concept, heads in MESH.items():
        full = [h.lower() for h in heads if "/" in h]
        plain = {h for h in heads if "/" not in h}
        out[concept] = [
            any(t.split("/")[0].strip() in plain or any(t.lower().startswith(f) for f in full) for t in terms)
            for terms in mesh_major
        ]
    return pd.DataFrame(out)


def negspacy_codes(texts: list[str], lexicon: Lexicon) -> pd.DataFrame:
    """Concept codes (1 affirmed, -1 negated) with negspacy's NegEx on a blank spaCy pipeline."""
    import spacy
    from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)
    from negspacy.termsets import termset

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    patterns = []
    for c in lexicon.concepts:
        for syn in c.synonyms:
            toks: list[dict] = []
            for w in _WORD.findall(syn.lower()):
                if w == "~":
                    toks += [{"OP": "?"}, {"OP": "?"}]
                elif w.endswith("*"):
                    toks.append({"LOWER": {"REGEX": f"^{w[:-1]}"}})
                else:
                    toks.append({"LOWER": w})
            patterns.append({"label": f"C{lexicon.names.index(c.name)}", "pattern": toks})
    ruler.add_patterns(patterns)
    labels = [f"C{j}" for j in range(len(lexicon))]
    nlp.add_pipe("negex", config={"neg_termset": termset("en_clinical").get_patterns(), "ent_types": labels})
    codes = np.zeros((len(texts), len(lexicon)), dtype=np.int8)
    for i, doc in enumerate(nlp.pipe(texts, batch_size=256)):
        for ent in doc.ents:
            j = int(ent.label_[1:])
            code = -1 if ent._.negex else 1
            if code == 1 or codes[i, j] == 0:
                codes[i, j] = code
    df = pd.DataFrame(codes, columns=lexicon.names)
    for c in lexicon.concepts:  # umbrella concepts, as in extract_concepts
        if c.includes:
            parts = df[[c.name, *c.includes]]
            df[c.name] = np.where((parts == 1).any(axis=1), 1, np.where((parts == -1).any(axis=1), -1, 0))
    return df


def prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    tp = int((pred & truth).sum())
    p = tp / max(int(pred.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {
        "mesh_n": int(truth.sum()),
        "pred_n": int(pred.sum()),
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
    }


def main(out_dir: Path = Path("bench/results")) -> None:
    rep = load_openi_reports()
    rep = rep[rep["report"].str.strip().str.len() > 0].reset_index(drop=True)
    texts = rep["report"].tolist()
    truth = mesh_matrix(rep["mesh_major"])
    lex = default_lexicon()
    t0 = time.perf_counter()
    ours = extract_concepts(texts, lex)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    neg = negspacy_codes(texts, lex)
    t_neg = time.perf_counter() - t0
    rows = []
    for concept in MESH:
        y = truth[concept].to_numpy()
        a = prf(ours[concept].to_numpy() == 1, y)
        a_unc = prf(np.isin(ours[concept].to_numpy(), (1, 2)), y)
        b = prf(neg[concept].to_numpy() == 1, y)
        cohort = {}
        if concept in COHORT_RULE:
            rx = TEXT_RULES[COHORT_RULE[concept]]
            hits = np.array([bool(affirmed_mentions(t, rx)) for t in texts])
            cohort = {f"cohort_rule_{k}": v for k, v in prf(hits, y).items() if k != "mesh_n"}
        rows.append(
            {
                "concept": concept,
                "mesh": "; ".join(MESH[concept]),
                **{f"medaudit_{k}": v for k, v in a.items()},
                "medaudit_with_uncertain_f1": a_unc["f1"],
                **{f"negspacy_{k}": v for k, v in b.items() if k != "mesh_n"},
                **cohort,
            }
        )
    df = pd.DataFrame(rows)
    meta = {
        "reports": len(texts),
        "seconds_medaudit": t_ours,
        "seconds_negspacy": t_neg,
        "macro_f1_medaudit": float(df["medaudit_f1"].mean()),
        "macro_f1_negspacy": float(df["negspacy_f1"].mean()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "concepts_vs_mesh.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"Open-i, {len(texts)} reports with text; MeSH major tags (human indexers) as reference.",
        f"Time: medaudit {t_ours:.1f} s, negspacy (blank spaCy + entity ruler) {t_neg:.1f} s, 1 thread.",
        f"Macro F1: medaudit {meta['macro_f1_medaudit']:.3f}, negspacy {meta['macro_f1_negspacy']:.3f}.",
        "",
        "| concept | MeSH major headings | MeSH n | medaudit n | P | R | F1 | F1 incl. uncertain "
        "| negspacy P | negspacy R | negspacy F1 | cohort text rule P | R | F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concept']} | {r['mesh']} | {r['medaudit_mesh_n']} | {r['medaudit_pred_n']} | "
            f"{r['medaudit_precision']:.2f} | {r['medaudit_recall']:.2f} | {r['medaudit_f1']:.2f} | "
            f"{r['medaudit_with_uncertain_f1']:.2f} | {r['negspacy_precision']:.2f} | "
            f"{r['negspacy_recall']:.2f} | {r['negspacy_f1']:.2f} | "
            + (
                f"{r['cohort_rule_precision']:.2f} | {r['cohort_rule_recall']:.2f} | {r['cohort_rule_f1']:.2f} |"
                if "cohort_rule_f1" in r
                else "– | – | – |"
            )
        )
    (out_dir / "concepts_vs_mesh.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench/results"))
