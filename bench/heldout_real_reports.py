"""Held-out failures built from the REAL Open-i reports and DICOM metadata: medaudit's audit vs Domino 0.1.5.

Each failure is a group of real Open-i studies that the scenario benchmark never uses: a finding that the
human MeSH indexers tagged (granuloma, scoliosis, hiatal hernia, emphysema/COPD, nodule, degenerative
spine change, calcinosis ...) or a metadata bin (age, sex, view), alone or with the label. The group is
defined from MeSH major tags and DICOM metadata, never from the report words the audit reads, so the audit
has to find it from the text and metadata as a user's audit would.

Per failure and seed: a cohort of ``--n`` studies (one row per report, metadata of its first frontal
image) is drawn with the group at its natural share, capped to ``[MIN_GROUP, MAX_SHARE * n]`` cases; the
label is the real "any finding" label; a synthetic classifier gets ``--bg-error`` (10%) of cases wrong at
random and ``--group-error`` (70%) of the group's cases wrong. Predicted probabilities are drawn on the
right (or wrong) side of 0.5. Ground truth = the group's cases.

Methods, on the same table:

* ``medaudit``: :func:`medaudit.audit.pipeline.run_audit` with its default configuration on the report
  and metadata modalities (no images exist for this table), as a new user would run it;
  ``medaudit:<slicer>`` overrides only the slicer (``mixture``, ``rules``, ``both``);
* ``domino-0.1.5``: the published Domino slicer (``run_domino.py`` in the peers folder, ``$MEDAUDIT_PEERS`` or ``../shared/peers``, in its own Python 3.9
  env, its default settings: 25 components, weights 10, PCA 128) on plain scikit-learn TF-IDF of the
  report text, with 5 slices like the audit.

Score: precision@10 (dcbench definition: best slice or complement by average precision against the
group). The failures are split once and for all into a ``tune`` set (looked at while developing) and a
``heldout`` set evaluated once at the end (``--split heldout``).

Usage::

    python bench/heldout_real_reports.py --split tune --seeds 0,1,2 --out bench/results/heldout_tune
    python bench/heldout_real_reports.py --split heldout --seeds 0,1,2 --out bench/results/heldout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.io import atomic_write_text
from medaudit.studies.cxr_slices.metrics import precision_at_k_dcbench

META = ["view_position", "age", "sex"]
MIN_GROUP, MAX_SHARE = 20, 0.10


@dataclass(frozen=True)
class Failure:
    """A failure group: MeSH major headings (any of, before the first ``/``) and/or a metadata rule."""

    name: str
    split: str  #: ``tune`` or ``heldout``
    mesh: tuple[str, ...] = ()
    mesh_full: tuple[str, ...] = ()  #: MeSH strings with subheadings, matched as prefixes
    age_min: float | None = None
    age_max: float | None = None
    sex: str | None = None
    view: str | None = None
    label: int | None = None  #: restrict the group to one true class


#: Fixed once, before any evaluation: tune failures may be inspected, held-out ones are run once.
FAILURES: tuple[Failure, ...] = (
    Failure("granuloma", "tune", mesh=("Granulomatous Disease", "Granuloma", "Calcified Granuloma")),
    Failure("scoliosis", "tune", mesh=("Scoliosis",)),
    Failure("age>=75", "tune", age_min=75),
    Failure("calcinosis & finding", "tune", mesh=("Calcinosis",), label=1),
    Failure("hiatal hernia", "heldout", mesh=("Hernia, Hiatal",)),
    Failure("emphysema/COPD", "heldout", mesh=("Emphysema", "Pulmonary Emphysema", "Pulmonary Disease, Chronic Obstructive")),
    Failure("nodule", "heldout", mesh=("Nodule",)),
    Failure("degenerative spine", "heldout", mesh_full=("Spine/degenerative", "Thoracic Vertebrae/degenerative")),
    Failure("female age<40 & no finding", "heldout", age_max=40, sex="F", label=0),
    Failure("AP view", "heldout", view="AP"),
    # fresh: defined on 2026-12-02, after the last product change of that day, and run once
    Failure("scarring", "fresh", mesh=("Cicatrix",)),
    Failure("atelectasis & age<60", "fresh", mesh=("Pulmonary Atelectasis",), age_max=60),
    Failure("bone fracture", "fresh", mesh=("Fractures, Bone",)),
    Failure("unsatisfactory image quality", "fresh", mesh=("Technical Quality of Image Unsatisfactory",)),
    Failure("diaphragmatic eventration", "fresh", mesh=("Diaphragmatic Eventration",)),
    Failure("male age>=70 & finding", "fresh", sex="M", age_min=70, label=1),
    # fresh2: defined on 2026-12-02 before the n-gram vocabulary change that "fresh" prompted; run once
    Failure("kyphosis", "fresh2", mesh=("Kyphosis",)),
    Failure("foreign bodies", "fresh2", mesh=("Foreign Bodies",)),
    Failure("pulmonary congestion", "fresh2", mesh=("Pulmonary Congestion",)),
    Failure("costophrenic angle", "fresh2", mesh=("Costophrenic Angle",)),
    Failure("lung markings", "fresh2", mesh=("Markings",)),
    Failure("female age>=65 & no finding", "fresh2", sex="F", age_min=65, label=0),
    # fresh3: defined on 2026-12-02 (second session) from MeSH headings with >= 19 reports that no split
    # used yet, before the lexicon was broadened to Open-i's frequent headings; run before and after
    Failure("diaphragm", "fresh3", mesh=("Diaphragm",)),
    Failure("deformity", "fresh3", mesh=("Deformity",)),
    Failure("mediastinum", "fresh3", mesh=("Mediastinum",)),
    Failure("lucency", "fresh3", mesh=("Lucency",)),
    Failure("spinal fusion", "fresh3", mesh=("Spinal Fusion",)),
    Failure("pulmonary fibrosis", "fresh3", mesh=("Pulmonary Fibrosis",)),
    Failure("thickening & finding", "fresh3", mesh=("Thickening",), label=1),
    # fresh4: defined on 2026-12-02 after the lexicon broadening and exploratory rules, from headings
    # that change did not target (and no split used), and metadata bins; run once on that code
    Failure("thoracic aorta", "fresh4", mesh=("Aorta, Thoracic",)),
    Failure("stents", "fresh4", mesh=("Stents",)),
    Failure("epicardial fat", "fresh4", mesh=("Epicardial Fat",)),
    Failure("shoulder", "fresh4", mesh=("Shoulder",)),
    Failure("pulmonary artery", "fresh4", mesh=("Pulmonary Artery",)),
    Failure("hyperlucent lung", "fresh4", mesh=("Lung, Hyperlucent",)),
    Failure("male & AP view", "fresh4", sex="M", view="AP"),
    Failure("age<30 & finding", "fresh4", age_max=30, label=1),
    # fresh5: defined on 2026-12-02 (third session) before the open-vocabulary n-gram change that
    # fresh4's small unnamed groups motivated, from headings no split used; not run before that change
    Failure("arthritis", "fresh5", mesh=("Arthritis",)),
    Failure("metabolic bone disease", "fresh5", mesh=("Bone Diseases, Metabolic",)),
    Failure("lumbar vertebrae", "fresh5", mesh=("Lumbar Vertebrae",)),
    Failure("mass", "fresh5", mesh=("Mass",)),
    Failure("interstitial lung disease", "fresh5", mesh=("Lung Diseases, Interstitial",)),
    Failure("cardiac shadow", "fresh5", mesh=("Cardiac Shadow",)),
    Failure("osteophyte & age<60", "fresh5", mesh=("Osteophyte",), age_max=60),
    Failure("female age>=80", "fresh5", sex="F", age_min=80),
    # fresh6: defined on 2026-12-02 (fifth session) before any run and before any change of that
    # session: subheadings (laterality, severity words), headings no split used, concept x metadata
    Failure("lung hypoinflation", "fresh6", mesh_full=("Lung/hypoinflation",)),
    Failure("tortuous aorta", "fresh6", mesh_full=("Aorta/tortuous", "Aorta, Thoracic/tortuous")),
    Failure("atherosclerosis", "fresh6", mesh=("Atherosclerosis",)),
    Failure("spondylosis", "fresh6", mesh=("Spondylosis",)),
    Failure("right pleural effusion", "fresh6", mesh_full=("Pleural Effusion/right",)),
    Failure("cardiomegaly & age<50", "fresh6", mesh=("Cardiomegaly",), age_max=50),
    Failure("airspace disease & female", "fresh6", mesh=("Airspace Disease",), sex="F"),
    Failure("indwelling catheter & age>=60", "fresh6", mesh=("Catheters, Indwelling",), age_min=60),
    # fresh7: defined on 2026-12-02 (sixth session) before any run of it, from the headings with >= 40
    # reports and the subheadings no split used: parenchymal words, devices, severity, concept x metadata
    Failure("lung hyperdistention", "fresh7", mesh_full=("Lung/hyperdistention",)),
    Failure("density", "fresh7", mesh=("Density",)),
    Failure("infiltrate", "fresh7", mesh=("Infiltrate",)),
    Failure("pulmonary edema", "fresh7", mesh=("Pulmonary Edema",)),
    Failure("pneumonia", "fresh7", mesh=("Pneumonia",)),
    Failure("surgical instruments", "fresh7", mesh=("Surgical Instruments",)),
    Failure("mild cardiomegaly", "fresh7", mesh_full=("Cardiomegaly/mild",)),
    Failure("opacity & male", "fresh7", mesh=("Opacity",), sex="M"),
    # fresh8: defined on 2026-12-03 (seventh session) before any run of it, from the headings with >= 29
    # reports no split used and location/severity subheadings no split used, plus concept x metadata
    Failure("consolidation", "fresh8", mesh=("Consolidation",)),
    Failure("inserted tube", "fresh8", mesh=("Tube, Inserted",)),
    Failure("implanted medical device", "fresh8", mesh=("Implanted Medical Device",)),
    Failure("borderline cardiomegaly", "fresh8", mesh_full=("Cardiomegaly/borderline",)),
    Failure("left basal atelectasis", "fresh8", mesh_full=("Pulmonary Atelectasis/base/left",)),
    Failure("elevated right diaphragm", "fresh8", mesh_full=("Diaphragm/right/elevated",)),
    Failure("pleural effusion & age>=70", "fresh8", mesh=("Pleural Effusion",), age_min=70),
    Failure("female age<40 & no finding", "fresh8", sex="F", age_max=40, label=0),
    # fresh9: defined on 2026-12-03 (eighth session) after the concept qualifiers (888f3ad) and before
    # any run of it, mechanically: every MeSH tag with a subheading carried by >= 25 of the 3,825
    # reports that no earlier split's group used (all 15 of them, none chosen or dropped)
    Failure("atherosclerosis/aorta", "fresh9", mesh_full=("Atherosclerosis/aorta",)),
    Failure("markings/bronchovascular", "fresh9", mesh_full=("Markings/bronchovascular",)),
    Failure("calcinosis/aorta", "fresh9", mesh_full=("Calcinosis/aorta",)),
    Failure("indwelling catheter/right", "fresh9", mesh_full=("Catheters, Indwelling/right",)),
    Failure("spondylosis/thoracic vertebrae", "fresh9", mesh_full=("Spondylosis/thoracic vertebrae",)),
    Failure("atelectasis/base/bilateral", "fresh9", mesh_full=("Pulmonary Atelectasis/base/bilateral",)),
    Failure("opacity/lung/base/left", "fresh9", mesh_full=("Opacity/lung/base/left",)),
    Failure("indwelling catheter/left", "fresh9", mesh_full=("Catheters, Indwelling/left",)),
    Failure("pleural effusion/bilateral/small", "fresh9", mesh_full=("Pleural Effusion/bilateral/small",)),
    Failure("opacity/lung/base/bilateral", "fresh9", mesh_full=("Opacity/lung/base/bilateral",)),
    Failure("diaphragm/bilateral/flattened", "fresh9", mesh_full=("Diaphragm/bilateral/flattened",)),
    Failure("cicatrix/lung/base/left", "fresh9", mesh_full=("Cicatrix/lung/base/left",)),
    Failure("cardiac shadow/enlarged", "fresh9", mesh_full=("Cardiac Shadow/enlarged",)),
    Failure("atelectasis/base/right", "fresh9", mesh_full=("Pulmonary Atelectasis/base/right",)),
    Failure("osteophyte/thoracic vertebrae/multiple", "fresh9", mesh_full=("Osteophyte/thoracic vertebrae/multiple",)),
    # fresh10: defined on 2026-12-03 (ninth session) before any run of it and before the anatomical site
    # qualifiers of that session, mechanically: every MeSH tag with a subheading carried by >= 15 reports
    # that no earlier split used, that is not a prefix of a used tag and whose heading no earlier split
    # used as a whole group; plus every heading with >= 15 reports that no split used (except "normal" and
    # "No Indexing"); all 16, none chosen or dropped
    Failure("calcinosis/hilum/lymph nodes/right", "fresh10", mesh_full=("Calcinosis/lung/hilum/lymph nodes/right",)),
    Failure("cardiomegaly/moderate", "fresh10", mesh_full=("Cardiomegaly/moderate",)),
    Failure("calcinosis/mediastinum/lymph nodes", "fresh10", mesh_full=("Calcinosis/mediastinum/lymph nodes",)),
    Failure("calcinosis/hilum/lymph nodes", "fresh10", mesh_full=("Calcinosis/lung/hilum/lymph nodes",)),
    Failure("opacity/middle lobe/right", "fresh10", mesh_full=("Opacity/lung/middle lobe/right",)),
    Failure("pleural effusion/left/small", "fresh10", mesh_full=("Pleural Effusion/left/small",)),
    Failure("calcinosis/hilum/lymph nodes/left", "fresh10", mesh_full=("Calcinosis/lung/hilum/lymph nodes/left",)),
    Failure("opacity/lung/base/right", "fresh10", mesh_full=("Opacity/lung/base/right",)),
    Failure("airspace disease/base/bilateral", "fresh10", mesh_full=("Airspace Disease/lung/base/bilateral",)),
    Failure("opacity/lung/lingula", "fresh10", mesh_full=("Opacity/lung/lingula",)),
    Failure("lung (heading)", "fresh10", mesh=("Lung",)),
    Failure("thoracic vertebrae (heading)", "fresh10", mesh=("Thoracic Vertebrae",)),
    Failure("spine (heading)", "fresh10", mesh=("Spine",)),
    Failure("aorta (heading)", "fresh10", mesh=("Aorta",)),
    Failure("pneumothorax", "fresh10", mesh=("Pneumothorax",)),
    Failure("medical device", "fresh10", mesh=("Medical Device",)),
)  # fmt: skip


def load_table() -> pd.DataFrame:
    """One row per Open-i report: text, MeSH major tags, any-finding label, metadata of its first
    frontal image (else its first image)."""
    from medaudit.data.cxr.openi import load_openi_dicom_metadata, load_openi_reports

    rep = load_openi_reports()
    meta = load_openi_dicom_metadata().set_index("image_id")
    rows = []
    for r in rep.itertuples(index=False):
        ims = [i for i in r.image_ids if i in meta.index]
        if not ims or not str(r.report).strip():
            continue
        frontal = [i for i in ims if meta.at[i, "frontal_lateral"] == "Frontal"]
        m = meta.loc[(frontal or ims)[0]]
        rows.append(
            {
                "id": r.report_id,
                "report": r.report,
                "mesh_major": list(r.mesh_major),
                "label": int(not r.no_finding),
                "view_position": m["view_position"],
                "age": m["age"],
                "sex": r.sex,
            }
        )
    return pd.DataFrame(rows)


def group_mask(df: pd.DataFrame, f: Failure) -> np.ndarray:
    """Boolean mask of the failure's group (all given conditions together)."""
    mask = np.ones(len(df), dtype=bool)
    if f.mesh or f.mesh_full:
        heads = df["mesh_major"].map(lambda ms: {m.split("/")[0].strip() for m in ms})
        pre = tuple(f.mesh_full) or ("\0",)
        full = df["mesh_major"].map(lambda ms: any(m.strip().startswith(pre) for m in ms))
        hit = heads.map(lambda s: bool(s & set(f.mesh))) | full
        mask &= hit.to_numpy()
    age = pd.to_numeric(df["age"], errors="coerce").to_numpy()
    if f.age_min is not None:
        mask &= np.nan_to_num(age, nan=-1) >= f.age_min
    if f.age_max is not None:
        mask &= np.nan_to_num(age, nan=1e9) < f.age_max
    if f.sex is not None:
        mask &= (df["sex"] == f.sex).to_numpy()
    if f.view is not None:
        mask &= (df["view_position"] == f.view).to_numpy()
    if f.label is not None:
        mask &= (df["label"] == f.label).to_numpy()
    return mask


def make_case(
    df: pd.DataFrame, mask: np.ndarray, seed: int, n: int, bg_error: float, group_error: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """A cohort of ``n`` studies with the group at its natural share (capped) and injected errors."""
    rng = np.random.default_rng([seed, 11])
    g_idx, o_idx = np.flatnonzero(mask), np.flatnonzero(~mask)
    k = int(np.clip(round(mask.mean() * n), MIN_GROUP, MAX_SHARE * n))
    k = min(k, len(g_idx))
    idx = np.concatenate([rng.choice(g_idx, k, replace=False), rng.choice(o_idx, n - k, replace=False)])
    idx = rng.permutation(idx)
    t = df.iloc[idx].reset_index(drop=True).drop(columns=["mesh_major"])
    gt = mask[idx]
    wrong = np.where(gt, rng.random(n) < group_error, rng.random(n) < bg_error)
    y = t["label"].to_numpy()
    pred = np.where(wrong, 1 - y, y)
    conf = rng.uniform(0.05, 0.45, n)  # distance below 0.5 for a 0 prediction
    t["prob"] = np.where(pred == 1, 1 - conf, conf)
    return t, gt


def run_medaudit(
    t: pd.DataFrame, seed: int, work: Path, slicer: str | None = None, overrides: dict[str, Any] | None = None
) -> np.ndarray:
    """The audit with its defaults on report + metadata (``slicer``: override the default slicer;
    ``overrides``: other AuditConfig fields, for ablations)."""
    from medaudit.audit.pipeline import AuditConfig, run_audit

    cfg = AuditConfig(
        meta=META,
        modalities=("report", "metadata"),
        seed=seed,
        write_report=False,
        cache_dir=work / "emb-cache",
    )
    if slicer:
        cfg.slicer = slicer
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    res = run_audit(t.drop(columns=["image"], errors="ignore"), cfg, work / "audit")
    mem = res.membership.set_index("id").loc[t["id"].astype(str)]
    return mem[[c for c in mem.columns if c.startswith("slice_")]].to_numpy(dtype=np.float64)


def run_domino(t: pd.DataFrame, seed: int, work: Path, python: str, script: Path) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer().fit_transform(t["report"].tolist()).toarray().astype(np.float32)
    p = t["prob"].to_numpy()
    np.save(work / "e.npy", x)
    np.save(work / "y.npy", t["label"].to_numpy().astype(np.int64))
    np.save(work / "p.npy", np.stack([1 - p, p], axis=1).astype(np.float32))
    cmd = [python, str(script), *(str(work / f) for f in ("e.npy", "y.npy", "p.npy", "o.npy"))]
    cmd += ["--n-slices", "5", "--seed", str(seed)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"domino failed: {res.stderr.strip()[-400:]}")
    return np.load(work / "o.npy").astype(np.float64)


def evaluate(args: argparse.Namespace) -> pd.DataFrame:
    df = load_table()
    rows = []
    for f in (f for f in FAILURES if f.split == args.split):
        mask = group_mask(df, f)
        for seed in args.seeds:
            t, gt = make_case(df, mask, seed, args.n, args.bg_error, args.group_error)
            base = {"failure": f.name, "split": f.split, "seed": seed, "n": len(t), "n_group": int(gt.sum())}
            base["n_group_pool"] = int(mask.sum())
            err = (t["prob"].to_numpy() >= 0.5).astype(int) != t["label"].to_numpy()
            base["group_share_of_errors"] = float(gt[err].mean())
            for method in args.methods:
                with tempfile.TemporaryDirectory(prefix="medaudit-heldout-") as td:
                    t0 = time.perf_counter()
                    if method.startswith("medaudit"):
                        s = run_medaudit(t, seed, Path(td), method.partition(":")[2] or None, args.audit_set)
                    else:
                        s = run_domino(t, seed, Path(td), args.domino_python, args.domino_script)
                    dt = time.perf_counter() - t0
                p10 = precision_at_k_dcbench(s, gt, 10)
                rows.append({**base, "method": method, "p10": p10, "seconds": dt})
                print(json.dumps(rows[-1]), flush=True)
    return pd.DataFrame(rows)


def summarise(res: pd.DataFrame) -> str:
    per = res.pivot_table(index=["failure"], columns="method", values="p10", aggfunc="mean")
    n_grp = res.groupby("failure")[["n_group", "n_group_pool", "group_share_of_errors"]].mean()
    lines = ["| failure | group in cohort (pool) | group share of errors | "
             + " | ".join(f"p@10 {m}" for m in per.columns) + " |",
             "|---|---|---|" + "---|" * len(per.columns)]  # fmt: skip
    for name, r in per.iterrows():
        g = n_grp.loc[name]
        cells = [f"{r[m]:.2f}" for m in per.columns]
        lines.append(
            f"| {name} | {g['n_group']:.0f} ({g['n_group_pool']:.0f}) | {g['group_share_of_errors']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("| **mean** | | | " + " | ".join(f"**{per[m].mean():.2f}**" for m in per.columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--split",
        choices=list(dict.fromkeys(f.split for f in FAILURES)),
        default="tune",
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--bg-error", type=float, default=0.10)
    ap.add_argument("--group-error", type=float, default=0.70)
    ap.add_argument("--methods", default="medaudit:mixture,medaudit:rules,medaudit:both,domino-0.1.5")
    ap.add_argument("--domino-python", default=os.environ.get("MEDAUDIT_DOMINO_PYTHON", ""))
    peers = Path(
        os.environ.get("MEDAUDIT_PEERS", Path(__file__).resolve().parents[1].parent / "shared" / "peers")
    )
    ap.add_argument("--domino-script", type=Path, default=peers / "run_domino.py")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--audit-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="AuditConfig override for an ablation (JSON value), e.g. rule_ngrams=1000",
    )
    args = ap.parse_args(argv)
    args.audit_set = {k: json.loads(v) for k, _, v in (a.partition("=") for a in args.audit_set)}
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "domino-0.1.5" in args.methods and not args.domino_python:
        env = subprocess.run(
            ["bash", str(args.domino_script.parent / "domino_env.sh")], capture_output=True, text=True
        )
        if env.returncode != 0:
            sys.exit(f"Domino env cannot be built: {env.stderr.strip()[-300:]}")
        args.domino_python = env.stdout.strip().splitlines()[-1]
    res = evaluate(args)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "runs.csv", res.to_csv(index=False))
    md = summarise(res)
    atomic_write_text(args.out / "summary.md", md)
    print(md)


if __name__ == "__main__":
    main()
