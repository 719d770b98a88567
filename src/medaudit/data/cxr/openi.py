"""Open-i / Indiana University chest X-ray collection: reports, labels, DICOM metadata, case table.

The collection ships radiology reports as XML (``ecgen-radiology/<n>.xml``, one per study, with
COMPARISON / INDICATION / FINDINGS / IMPRESSION sections, MeSH terms and the ids of its images) and the
images as ``CXR<n>_IM-<xxxx>-<yyyy>.png`` (``NLMCXR_png``) or ``.dcm``. torchxrayvision bundles the report
archive (``NLMCXR_reports.tgz``) and a table of DICOM headers (``nlmcxr_dicom_metadata.csv.gz``); both are
read here directly, without importing torchxrayvision.

Labels (columns of :data:`OPENI_LABELS`) are derived from each report with two sources, OR-ed:

* **MeSH major terms** (the curated annotation in the XML), mapped per label in :data:`MESH_RULES`;
* **negation-aware text rules** on FINDINGS + IMPRESSION (:data:`TEXT_RULES`): a pattern counts only when
  no negation cue (``no``, ``without``, ``negative for``, ``free of``, ``removed`` ...) precedes it within
  the same clause (clauses split at ``.``, ``;``, ``but``, ``however``, ``although``). Hedged mentions
  (``may represent``, ``possible``) count as positive.

``no_finding`` is 1 when none of the finding labels is positive (``support_devices`` does not count, as in
CheXpert).
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from medaudit.data.cxr.common import (
    UncertainPolicy,
    check_images,
    finalize,
    read_csv,
    require_columns,
)
from medaudit.errors import InputError

FINDING_LABELS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "opacity",
    "atelectasis",
    "pneumothorax",
    "edema",
    "nodule",
    "fracture",
    "emphysema",
)
OPENI_LABELS: tuple[str, ...] = ("no_finding", *FINDING_LABELS, "support_devices")

#: MeSH major heading (text before the first ``/``) -> label.
MESH_RULES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "pleural_effusion": ("Pleural Effusion",),
    "opacity": ("Opacity", "Airspace Disease", "Infiltrate", "Consolidation", "Pneumonia"),
    "atelectasis": ("Pulmonary Atelectasis",),
    "pneumothorax": ("Pneumothorax",),
    "edema": ("Pulmonary Edema", "Pulmonary Congestion"),
    "nodule": ("Nodule", "Mass"),
    "fracture": ("Fractures, Bone",),
    "emphysema": ("Emphysema", "Pulmonary Emphysema", "Pulmonary Disease, Chronic Obstructive"),
    "support_devices": (
        "Catheters, Indwelling",
        "Implanted Medical Device",
        "Medical Device",
        "Tube, Inserted",
        "Stents",
        "Pacemaker, Artificial",
        "Defibrillators, Implantable",
    ),
}

_SEV = r"(?:mildly |moderately |markedly |severely |slightly |borderline |minimally )?"
#: label -> regular expression matched (case-insensitive) in FINDINGS + IMPRESSION.
TEXT_RULES: dict[str, str] = {
    "cardiomegaly": (
        r"cardiomegaly|(?:enlarged|enlargement of the) (?:cardiac|heart)|"
        rf"(?:heart|cardiac silhouette|cardiac shadow|heart size|cardiomediastinal silhouette) "
        rf"(?:is |are |appears |remains )?{_SEV}(?:enlarged|increased)"
    ),
    "pleural_effusion": r"(?<!pericardial )effusion",
    "opacity": r"opacit|air ?space disease|consolidat|infiltrat|pneumonia",
    "atelectasis": r"atelecta",
    "pneumothorax": r"pneumothora",
    "edema": r"edema|vascular congestion|pulmonary congestion",
    "nodule": r"nodul|\bmass(?:es)?\b",
    "fracture": r"fracture",
    "emphysema": r"emphysem|\bcopd\b|hyperinflat|hyperexpan",
    "support_devices": (
        r"pacemaker|\bpacer\b|defibrillator|\baicd\b|catheter|\bpicc\b|central (?:venous )?line|"
        r"port-?a-?cath|\bport\b|endotracheal|\bet tube|\bng tube|nasogastric|enteric tube|feeding tube|"
        r"chest tube|tracheostomy|\bleads?\b|\bstent"
    ),
}

_NEG = re.compile(
    r"\b(?:no|not|without|negative for|free of|clear of|resolution of|resolved|removed|removal of|"
    r"absence of|absent|rather than|interval removal)\b"
)
_CLAUSE_SPLIT = re.compile(r"[.;:]|\bbut\b|\bhowever\b|\balthough\b|\bwith the exception of\b")

#: Device kinds (used by the phantom renderer to draw the right hardware).
DEVICE_KINDS: dict[str, str] = {
    "pacemaker": r"pacemaker|\bpacer\b|defibrillator|\baicd\b|\bleads?\b",
    "line": r"catheter|\bpicc\b|central (?:venous )?line|port-?a-?cath|\bport\b",
    "tube": r"endotracheal|\bet tube|\bng tube|nasogastric|enteric tube|feeding tube|chest tube|tracheostomy",
}
MESH_DEVICE_KIND = {
    "Catheters, Indwelling": "line",
    "Implanted Medical Device": "pacemaker",
    "Pacemaker, Artificial": "pacemaker",
    "Defibrillators, Implantable": "pacemaker",
    "Tube, Inserted": "tube",
    "Medical Device": "line",
    "Stents": "line",
}


def affirmed_mentions(text: str, pattern: str) -> list[str]:
    """Clauses of ``text`` where ``pattern`` occurs without a preceding negation cue in the clause."""
    rx = re.compile(pattern, re.IGNORECASE)
    out: list[str] = []
    for clause in _CLAUSE_SPLIT.split(text.lower()):
        for m in rx.finditer(clause):
            if not _NEG.search(clause[: m.start()]):
                out.append(clause.strip())
                break
    return out


def report_labels(findings: str, impression: str, mesh_major: list[str]) -> dict[str, int]:
    """Binary labels of one report from its MeSH major terms and negation-aware text rules."""
    text = f"{findings or ''}. {impression or ''}"
    heads = {m.split("/")[0].strip() for m in mesh_major}
    labels: dict[str, int] = {}
    for lab in (*FINDING_LABELS, "support_devices"):
        by_mesh = any(h in heads for h in MESH_RULES[lab])
        by_text = bool(affirmed_mentions(text, TEXT_RULES[lab]))
        labels[lab] = int(by_mesh or by_text)
    labels["no_finding"] = int(not any(labels[k] for k in FINDING_LABELS))
    return {k: labels[k] for k in OPENI_LABELS}


def finding_details(findings: str, impression: str, mesh_major: list[str]) -> dict[str, object]:
    """Rendering hints from the report: device kinds, sides, severities (used by the phantom cohort)."""
    text = f"{findings or ''}. {impression or ''}"
    det: dict[str, object] = {}
    kinds = [k for k, rx in DEVICE_KINDS.items() if affirmed_mentions(text, rx)]
    for m in mesh_major:
        k = MESH_DEVICE_KIND.get(m.split("/")[0].strip())
        if k and k not in kinds:
            kinds.append(k)
    det["device_kinds"] = "|".join(sorted(kinds))
    for lab in ("pleural_effusion", "opacity", "atelectasis", "cardiomegaly", "pneumothorax", "nodule"):
        clauses = affirmed_mentions(text, TEXT_RULES[lab])
        quals = " ".join(m.lower() for m in mesh_major if m.split("/")[0].strip() in MESH_RULES[lab])
        ctx = " ".join(clauses) + " " + quals
        side = "both" if re.search(r"bilateral|both|bibasilar", ctx) else ""
        if not side:
            r, left = bool(re.search(r"\bright\b", ctx)), bool(re.search(r"\bleft\b", ctx))
            side = "both" if (r and left) else "right" if r else "left" if left else ""
        det[f"{lab}_side"] = side
        det[f"{lab}_upper"] = int(bool(re.search(r"upper|apex|apical", ctx)))
        if re.search(r"\b(?:large|moderate|marked|markedly|severe|extensive|dense)\b", ctx):
            sev = 2
        elif re.search(r"\b(?:small|mild|mildly|minimal|trace|tiny|subtle|borderline|slight|minor)\b", ctx):
            sev = 0
        else:
            sev = 1
        det[f"{lab}_severity"] = sev
    return det


def _sex_from_indication(indication: str) -> str:
    t = (indication or "").lower()
    if re.search(r"\b(?:female|woman|girl|f)\b", t):
        return "F"
    if re.search(r"\b(?:male|man|boy|m)\b", t):
        return "M"
    return "unknown"


def iter_openi_xml(source: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, xml bytes)`` from an ``ecgen-radiology`` folder, its parent, or a ``.tgz`` of it."""
    src = Path(source)
    if src.is_file() and (src.suffix in (".tgz", ".gz") or tarfile.is_tarfile(src)):
        try:
            with tarfile.open(src) as tar:
                members = sorted(
                    (m for m in tar.getmembers() if m.name.endswith(".xml")), key=lambda m: m.name
                )
                if not members:
                    raise InputError(f"{src}: archive holds no report .xml files")
                for m in members:
                    fh = tar.extractfile(m)
                    if fh is not None:
                        yield m.name, fh.read()
        except (tarfile.TarError, EOFError, OSError) as exc:  # EOFError: a truncated .tgz
            raise InputError(f"{src}: not a readable report archive ({exc})") from exc
        return
    if src.is_dir():
        folder = src / "ecgen-radiology" if (src / "ecgen-radiology").is_dir() else src
        files = sorted(folder.glob("*.xml"))
        if not files:
            raise InputError(f"{src}: no report .xml files (expected ecgen-radiology/*.xml)")
        for f in files:
            yield str(f), f.read_bytes()
        return
    raise InputError(
        f"{src}: Open-i reports not found (expected an ecgen-radiology folder or NLMCXR_reports.tgz)"
    )


def parse_openi_xml(data: bytes, name: str = "<xml>") -> dict[str, object]:
    """Parse one Open-i report XML into its sections, MeSH terms and image ids."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(f"{name}: malformed report XML ({exc})") from exc
    uid = root.find("uId")
    if uid is None or not uid.get("id"):
        raise InputError(f"{name}: report XML has no <uId id=...>")
    sec = {"COMPARISON": "", "INDICATION": "", "FINDINGS": "", "IMPRESSION": ""}
    for a in root.iter("AbstractText"):
        lab = (a.get("Label") or "").upper()
        if lab in sec:
            sec[lab] = " ".join((a.text or "").split())
    major = [m.text.strip() for m in root.iter("major") if m.text]
    auto = [m.text.strip() for m in root.iter("automatic") if m.text]
    images = [p.get("id") for p in root.findall("parentImage") if p.get("id")]
    return {
        "report_id": uid.get("id"),
        "comparison": sec["COMPARISON"],
        "indication": sec["INDICATION"],
        "findings": sec["FINDINGS"],
        "impression": sec["IMPRESSION"],
        "mesh_major": major,
        "mesh_automatic": auto,
        "image_ids": images,
    }


def report_text(findings: str, impression: str) -> str:
    parts = []
    if findings:
        parts.append(f"FINDINGS: {findings}")
    if impression:
        parts.append(f"IMPRESSION: {impression}")
    return " ".join(parts)


def load_openi_reports(source: str | Path | None = None) -> pd.DataFrame:
    """One row per report with sections, MeSH terms, image ids, derived labels and rendering hints.

    ``source`` is an ``ecgen-radiology`` folder or ``NLMCXR_reports.tgz``; ``None`` uses the copy bundled
    with torchxrayvision (:func:`medaudit.data.assets.openi_reports_tgz`).
    """
    if source is None:
        from medaudit.data.assets import openi_reports_tgz

        source = openi_reports_tgz()
    rows = []
    for name, data in iter_openi_xml(source):
        r = parse_openi_xml(data, name)
        r.update(report_labels(r["findings"], r["impression"], r["mesh_major"]))  # type: ignore[arg-type]
        r.update(finding_details(r["findings"], r["impression"], r["mesh_major"]))  # type: ignore[arg-type]
        r["sex"] = _sex_from_indication(r["indication"])  # type: ignore[arg-type]
        r["report"] = report_text(r["findings"], r["impression"])  # type: ignore[arg-type]
        rows.append(r)
    df = pd.DataFrame(rows)
    df["_n"] = df["report_id"].str.extract(r"(\d+)", expand=False).astype(float)
    df = df.sort_values(["_n", "report_id"]).drop(columns="_n").reset_index(drop=True)
    return df


_VIEW_MAP = {
    "PA": "PA",
    "AP": "AP",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LATERAL": "LATERAL",
    "LARGE LATERAL": "LATERAL",
}


def load_openi_dicom_metadata(path: str | Path | None = None) -> pd.DataFrame:
    """Per-image metadata from the Open-i DICOM header table (``nlmcxr_dicom_metadata.csv.gz``).

    Returns ``image_id``, ``view_position`` (PA / AP / LATERAL; when the header's View Position is blank
    it is inferred from Patient Orientation: rows running A/P mean a lateral view, else frontal, recorded
    as PA), ``view_source`` (``header`` or ``orientation``), ``frontal_lateral``, ``age`` (years, from
    Patient's Birth Date and Study Date), ``study_date``, ``patient_id``, ``kvp``, ``exposure``.
    """
    if path is None:
        from medaudit.data.assets import openi_dicom_metadata_csv

        path = openi_dicom_metadata_csv()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: DICOM metadata table not found")
    cols = [
        "imageid",
        "View Position",
        "Patient Orientation",
        "Patient's Birth Date",
        "Study Date",
        "Patient ID",
    ]
    raw = read_csv(path, dtype=str, low_memory=False)
    require_columns(raw, cols, path)
    vp = raw["View Position"].str.strip().str.upper().map(_VIEW_MAP)
    orient = raw["Patient Orientation"].fillna("")
    inferred = np.where(orient.str.contains(r"'[AP]'"), "LATERAL", "PA")
    view = vp.where(vp.notna(), pd.Series(inferred, index=raw.index))
    birth = pd.to_datetime(raw["Patient's Birth Date"], format="%Y%m%d", errors="coerce")
    study = pd.to_datetime(raw["Study Date"], format="%Y%m%d", errors="coerce")
    age = ((study - birth).dt.days / 365.25).round(1)
    age = age.where((age >= 0) & (age <= 110))
    out = pd.DataFrame(
        {
            "image_id": raw["imageid"].str.strip(),
            "view_position": view,
            "view_source": np.where(vp.notna(), "header", "orientation"),
            "frontal_lateral": np.where(view == "LATERAL", "Lateral", "Frontal"),
            "age": age,
            "study_date": study.dt.strftime("%Y-%m-%d"),
            "patient_id": raw["Patient ID"],
            "kvp": pd.to_numeric(raw.get("KVP"), errors="coerce") if "KVP" in raw else np.nan,
            "exposure": pd.to_numeric(raw.get("Exposure"), errors="coerce") if "Exposure" in raw else np.nan,
        }
    )
    return out.drop_duplicates("image_id").reset_index(drop=True)


def read_openi(
    reports: str | Path | None,
    images_dir: str | Path,
    dicom_metadata: str | Path | None = None,
    target: str | None = None,
    uncertain: UncertainPolicy = "zeros",
    verify_images: bool = False,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Case table of the Open-i collection: one row per image found in ``images_dir``.

    ``reports``: ``ecgen-radiology`` folder or ``NLMCXR_reports.tgz`` (``None``: the torchxrayvision copy).
    Images are matched by id (``CXR1000_IM-0003-1001.png|.jpg|.dcm``), searched recursively. Metadata come
    from the DICOM header table (``None``: the torchxrayvision copy). Labels: :data:`OPENI_LABELS`.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: Open-i images folder not found")
    found: dict[str, Path] = {}
    for ext in ("png", "jpg", "jpeg", "dcm"):
        for p in images_dir.rglob(f"*.{ext}"):
            found.setdefault(p.stem, p.absolute())
    if not found:
        raise InputError(f"{images_dir}: no images (expected CXR<n>_IM-<xxxx>-<yyyy>.png/.jpg/.dcm)")
    rep = load_openi_reports(reports)
    meta = load_openi_dicom_metadata(dicom_metadata).set_index("image_id")
    rows = []
    for r in rep.itertuples(index=False):
        for iid in r.image_ids:
            if iid not in found:
                continue
            row = {"id": iid, **{k: getattr(r, k) for k in OPENI_LABELS}}
            row.update({"image": str(found[iid]), "report": r.report, "report_id": r.report_id, "sex": r.sex})
            if iid in meta.index:
                m = meta.loc[iid]
                row.update({k: m[k] for k in ("view_position", "frontal_lateral", "age", "patient_id")})
            rows.append(row)
    if not rows:
        raise InputError(f"{images_dir}: none of the images matches an image id listed in the reports")
    df = pd.DataFrame(rows)
    origins = [f"image of report {r}" for r in df["report_id"]]  # found under images_dir, listed by a report
    df = check_images(df, verify=verify_images, skip_bad=skip_bad, origins=origins)
    return finalize(df, list(OPENI_LABELS), target, uncertain, f"Open-i {images_dir}")
