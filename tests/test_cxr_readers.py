"""Readers of MIMIC-CXR-JPG, CheXpert, ChestX-ray14 and Open-i on tiny replicas built in tmp_path."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.data.cxr import (
    CHEXPERT_LABELS,
    load_openi_dicom_metadata,
    load_openi_reports,
    read_chexpert,
    read_mimic_cxr,
    read_nih,
    read_openi,
    select_target,
)
from medaudit.data.cxr.openi import affirmed_mentions, report_labels
from medaudit.errors import InputError


def _img(path: Path, seed: int = 0, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _shipped_header(name: str) -> list[str]:
    from medaudit.data.assets import xrv_data

    with gzip.open(xrv_data(name), "rt") as fh:
        return fh.readline().strip().split(",")


# ------------------------------------------------------------------------------------------- CheXpert


def _chexpert(tmp_path: Path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    header = _shipped_header("chexpert_train.csv.gz")
    assert header[:5] == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
    rows = []
    for i, (fl, ap, dev) in enumerate(
        [("Frontal", "AP", 1.0), ("Lateral", "", -1.0), ("Frontal", "PA", np.nan)]
    ):
        rel = f"CheXpert-v1.0-small/train/patient0000{i + 1}/study1/view1_{fl.lower()}.jpg"
        _img(tmp_path / rel, i)
        labels = dict.fromkeys(CHEXPERT_LABELS, np.nan)
        labels["Support Devices"] = dev
        labels["Cardiomegaly"] = [1.0, 0.0, -1.0][i]
        rows.append(
            {"Path": rel, "Sex": "Female", "Age": 60 + i, "Frontal/Lateral": fl, "AP/PA": ap, **labels}
        )
    pd.DataFrame(rows, columns=header).to_csv(root / "train.csv", index=False)
    return root


def test_chexpert_reader_and_uncertain_policies(tmp_path):
    root = _chexpert(tmp_path)
    df = read_chexpert(root)
    assert list(df.columns[:3]) == ["id", "no_finding", "enlarged_cardiomediastinum"]
    assert {"image", "report", "sex", "age", "view_position", "patient_id"} <= set(df.columns)
    assert df["view_position"].tolist() == ["AP", "LATERAL", "PA"]
    assert all(Path(p).is_file() for p in df["image"])
    assert df["support_devices"].tolist()[:2] == [1.0, -1.0]
    zeros = read_chexpert(root, target="Support Devices", uncertain="zeros")
    ones = read_chexpert(root, target="support_devices", uncertain="ones")
    ign = read_chexpert(root, target="support devices", uncertain="ignore")
    assert zeros["label"].tolist() == [1, 0, 0]
    assert ones["label"].tolist() == [1, 1, 0]
    assert ign["label"].tolist() == [1, 0] and len(ign) == 2
    with pytest.raises(InputError, match="not a label column"):
        read_chexpert(root, target="tumour")


def test_chexpert_wrong_layout(tmp_path):
    root = _chexpert(tmp_path)
    with pytest.raises(InputError, match="folder not found"):
        read_chexpert(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    with pytest.raises(InputError, match=r"missing train\.csv"):
        read_chexpert(tmp_path / "bad", split="train")
    raw = pd.read_csv(root / "train.csv").drop(columns=["AP/PA"])
    raw.to_csv(root / "train.csv", index=False)
    with pytest.raises(InputError, match="AP/PA"):
        read_chexpert(root)


def test_chexpert_missing_image_named(tmp_path):
    root = _chexpert(tmp_path)
    victim = next(root.rglob("view1_lateral.jpg"))
    victim.unlink()
    with pytest.raises(InputError, match=r"view1_lateral\.jpg"):
        read_chexpert(root)
    assert len(read_chexpert(root, skip_bad=True)) == 2


# ------------------------------------------------------------------------------------------- NIH


def _nih(tmp_path: Path, split_folders: bool = True) -> Path:
    root = tmp_path / "nih"
    header = _shipped_header("Data_Entry_2017_v2020.csv.gz")
    rows = [
        ["00000001_000.png", "Cardiomegaly", 0, 1, 57, "M", "PA", 2682, 2749, 0.143, 0.143],
        ["00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA", 2894, 2729, 0.143, 0.143],
        ["00000002_000.png", "No Finding", 0, 2, 81, "M", "AP", 2500, 2048, 0.171, 0.171],
    ]
    root.mkdir(parents=True)
    pd.DataFrame(rows, columns=header).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    for i, r in enumerate(rows):
        folder = root / ("images_001/images" if split_folders and i < 2 else "images_002/images")
        _img(folder / r[0], i)
    (root / "test_list.txt").write_text("00000002_000.png\n")
    return root


def test_nih_reader(tmp_path):
    root = _nih(tmp_path)
    df = read_nih(root, target="cardiomegaly")
    assert df["id"].tolist() == ["00000001_000", "00000001_001", "00000002_000"]
    assert df["label"].tolist() == [1, 1, 0]
    assert df["emphysema"].tolist() == [0.0, 1.0, 0.0]
    assert df["no_finding"].tolist() == [0.0, 0.0, 1.0]
    assert df["view_position"].tolist() == ["PA", "PA", "AP"]
    assert df["split"].tolist() == ["", "", "test"]
    assert (df["report"] == "").all()


def test_nih_wrong_layout(tmp_path):
    root = _nih(tmp_path)
    (root / "Data_Entry_2017_v2020.csv").rename(root / "entries.csv")
    with pytest.raises(InputError, match="Data_Entry_2017"):
        read_nih(root)
    root2 = _nih(tmp_path / "b")
    for p in root2.rglob("*.png"):
        p.unlink()
    with pytest.raises(InputError, match="none of the 3 images"):
        read_nih(root2)
    root3 = _nih(tmp_path / "c")
    next(root3.rglob("00000001_001.png")).unlink()
    with pytest.raises(InputError, match=r"00000001_001\.png"):
        read_nih(root3, require_all_images=True)
    assert read_nih(root3).attrs["n_missing_images"] == 1


# ------------------------------------------------------------------------------------------- MIMIC


def _mimic(tmp_path: Path, gz: bool = True) -> tuple[Path, Path]:
    root = tmp_path / "mimic-cxr-jpg"
    reports = tmp_path / "mimic-cxr-reports"
    imgs = [
        ("d1", 10000032, 50414267, "PA"),
        ("d2", 10000032, 50414267, "LATERAL"),
        ("d3", 10000764, 57375967, "AP"),
    ]
    meta = pd.DataFrame(
        [
            {
                "dicom_id": d,
                "subject_id": s,
                "study_id": t,
                "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                "ViewPosition": v,
                "Rows": 3056,
                "Columns": 2544,
                "StudyDate": 21800506,
                "StudyTime": 213014.531,
                "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                "ViewCodeSequence_CodeMeaning": "postero-anterior",
                "PatientOrientationCodeSequence_CodeMeaning": "Erect",
            }
            for d, s, t, v in imgs
        ]
    )
    lab = pd.DataFrame(
        [
            {
                "subject_id": 10000032,
                "study_id": 50414267,
                **dict.fromkeys(CHEXPERT_LABELS, np.nan),
                "No Finding": 1.0,
            },
            {
                "subject_id": 10000764,
                "study_id": 57375967,
                **dict.fromkeys(CHEXPERT_LABELS, np.nan),
                "Support Devices": 1.0,
                "Edema": -1.0,
            },
        ]
    )
    split = pd.DataFrame(
        {
            "dicom_id": ["d1", "d2", "d3"],
            "study_id": [50414267] * 2 + [57375967],
            "subject_id": [10000032] * 2 + [10000764],
            "split": ["train", "train", "test"],
        }
    )
    root.mkdir(parents=True)
    ext = ".csv.gz" if gz else ".csv"
    meta.to_csv(root / f"mimic-cxr-2.0.0-metadata{ext}", index=False)
    lab.to_csv(root / f"mimic-cxr-2.0.0-chexpert{ext}", index=False)
    split.to_csv(root / f"mimic-cxr-2.0.0-split{ext}", index=False)
    for i, (d, s, t, _) in enumerate(imgs):
        _img(root / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg", i)
    for s, t, text in [
        (10000032, 50414267, "FINDINGS: No acute process."),
        (10000764, 57375967, "IMPRESSION: ET tube."),
    ]:
        p = reports / "files" / f"p{str(s)[:2]}" / f"p{s}" / f"s{t}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"                                 FINAL REPORT\n {text}\n")
    return root, reports


def test_mimic_reader(tmp_path):
    root, reports = _mimic(tmp_path)
    df = read_mimic_cxr(root, reports_root=reports, target="support_devices")
    assert df["id"].tolist() == ["d1", "d2", "d3"]
    assert df["label"].tolist() == [0, 0, 1]
    assert df["report"].iloc[2] == "FINAL REPORT IMPRESSION: ET tube."
    assert df["report"].iloc[0] == df["report"].iloc[1]
    assert df["view_position"].tolist() == ["PA", "LATERAL", "AP"]
    assert df["frontal_lateral"].tolist() == ["Frontal", "Lateral", "Frontal"]
    assert {"patient_orientation", "study_date", "study_time", "patient_id", "study_id"} <= set(df.columns)
    test = read_mimic_cxr(root, reports_root=reports, split="test")
    assert test["id"].tolist() == ["d3"]
    assert test["edema"].tolist() == [-1.0]
    assert read_mimic_cxr(root, reports_root=reports, target="edema", uncertain="ones")["label"].tolist() == [
        0,
        0,
        1,
    ]


def test_mimic_wrong_layout(tmp_path):
    root, reports = _mimic(tmp_path, gz=False)
    with pytest.raises(InputError, match="report of study s50414267"):
        read_mimic_cxr(root)  # reports are in a separate folder
    assert (read_mimic_cxr(root, require_reports=False)["report"] == "").all()
    with pytest.raises(InputError, match="negbio"):
        read_mimic_cxr(root, reports_root=reports, labeler="negbio")
    (root / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(InputError, match=r"mimic-cxr-2\.0\.0-metadata\.csv"):
        read_mimic_cxr(root, reports_root=reports)
    root2, reports2 = _mimic(tmp_path / "b")
    next((root2 / "files").rglob("d2.jpg")).unlink()
    with pytest.raises(InputError, match=r"d2\.jpg"):
        read_mimic_cxr(root2, reports_root=reports2)
    root3 = tmp_path / "c"
    root3.mkdir()
    with pytest.raises(InputError, match="files/"):
        read_mimic_cxr(root3)


# ------------------------------------------------------------------------------------------- Open-i

_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">{ind}</AbstractText>
<AbstractText Label="FINDINGS">{f}</AbstractText>
<AbstractText Label="IMPRESSION">{imp}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH>{mesh}</MeSH>
<parentImage id="CXR{n}_IM-0001-1001"/><parentImage id="CXR{n}_IM-0001-2001"/>
</eCitation>"""


def _openi(tmp_path: Path) -> tuple[Path, Path, Path]:
    rep = tmp_path / "ecgen-radiology"
    rep.mkdir(parents=True)
    cases = [
        (
            1,
            "male",
            "The heart is enlarged. No pleural effusion.",
            "Cardiomegaly.",
            "<major>Cardiomegaly</major>",
        ),
        (
            2,
            "XXXX-year-old female",
            "Left PICC line tip in SVC. Lungs clear.",
            "No acute disease.",
            "<major>Catheters, Indwelling</major>",
        ),
        (
            3,
            "",
            "No focal consolidation, pleural effusion or pneumothorax.",
            "Normal chest.",
            "<major>normal</major>",
        ),
    ]
    for n, ind, f, imp, mesh in cases:
        (rep / f"{n}.xml").write_text(_XML.format(n=n, ind=ind, f=f, imp=imp, mesh=mesh))
    imgs = tmp_path / "NLMCXR_png"
    for n, *_ in cases:
        _img(imgs / f"CXR{n}_IM-0001-1001.png", n)
    meta = pd.DataFrame(
        {
            "imageid": [f"CXR{n}_IM-0001-1001" for n, *_ in cases],
            "View Position": ["PA", np.nan, "AP"],
            "Patient Orientation": ["['L', 'F']", "['A', 'F']", "['L', 'F']"],
            "Patient's Birth Date": ["19550820", "19660308", "19400101"],
            "Study Date": ["20110328", "20120312", "20100101"],
            "Patient ID": ["1", "2", "3"],
        }
    )
    meta_p = tmp_path / "meta.csv"
    meta.to_csv(meta_p, index=False)
    return rep, imgs, meta_p


def test_openi_reader_folder_and_tgz(tmp_path):
    rep, imgs, meta_p = _openi(tmp_path)
    df = read_openi(rep, imgs, meta_p, target="cardiomegaly")
    assert df["id"].tolist() == ["CXR1_IM-0001-1001", "CXR2_IM-0001-1001", "CXR3_IM-0001-1001"]
    assert df["label"].tolist() == [1, 0, 0]
    assert df["support_devices"].tolist() == [0, 1, 0]
    assert df["no_finding"].tolist() == [0, 1, 1]
    assert df["view_position"].tolist() == ["PA", "LATERAL", "AP"]
    assert df["sex"].tolist() == ["M", "F", "unknown"]
    assert df["age"].iloc[0] == pytest.approx(55.6, abs=0.1)
    assert df["report"].iloc[0].startswith("FINDINGS: The heart is enlarged.")
    tgz = tmp_path / "reports.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(rep, arcname="ecgen-radiology")
    df2 = read_openi(tgz, imgs, meta_p)
    assert df2["report"].tolist() == df["report"].tolist()


def test_openi_wrong_layout(tmp_path):
    rep, imgs, meta_p = _openi(tmp_path)
    with pytest.raises(InputError, match="images folder not found"):
        read_openi(rep, tmp_path / "none", meta_p)
    (tmp_path / "other").mkdir()
    _img(tmp_path / "other" / "unrelated.png")
    with pytest.raises(InputError, match="none of the images"):
        read_openi(rep, tmp_path / "other", meta_p)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"ecgen-radiology"):
        read_openi(empty, imgs, meta_p)
    (rep / "9.xml").write_text("<eCitation><uId")
    with pytest.raises(InputError, match=r"9\.xml"):
        read_openi(rep, imgs, meta_p)


def test_openi_negation_rules():
    assert affirmed_mentions("No pleural effusion or pneumothorax.", r"effusion") == []
    assert affirmed_mentions("Stable cardiomegaly without effusion.", r"cardiomegaly")
    assert not affirmed_mentions("Stable cardiomegaly without effusion.", r"effusion")
    assert affirmed_mentions("No pneumothorax. Small left effusion.", r"effusion")
    lab = report_labels("Heart size is mildly enlarged. Pacemaker in place.", "", [])
    assert lab["cardiomegaly"] == 1 and lab["support_devices"] == 1 and lab["no_finding"] == 0
    lab = report_labels("The heart size is normal. Lungs are clear.", "No acute disease.", ["normal"])
    assert lab["no_finding"] == 1 and sum(lab.values()) == 1


def test_openi_shipped_copies():
    rep = load_openi_reports()
    assert len(rep) == 3955
    assert rep["cardiomegaly"].sum() > 300 and rep["support_devices"].sum() > 200
    meta = load_openi_dicom_metadata()
    assert set(meta["view_position"]) == {"PA", "AP", "LATERAL"}
    assert meta["age"].between(0, 110).mean() > 0.9


def test_select_target_policies():
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "edema": [1.0, -1.0, 0.0, np.nan]})
    assert select_target(df, "Edema", ["edema"], "zeros")["label"].tolist() == [1, 0, 0, 0]
    assert select_target(df, "edema", ["edema"], "ones")["label"].tolist() == [1, 1, 0, 0]
    assert select_target(df, "edema", ["edema"], "ignore")["id"].tolist() == ["a", "c", "d"]
    with pytest.raises(InputError, match="uncertain policy"):
        select_target(df, "edema", ["edema"], "maybe")  # type: ignore[arg-type]


def test_corrupt_image_reported(tmp_path):
    root = _nih(tmp_path)
    bad = next(root.rglob("00000001_001.png"))
    bad.write_bytes(b"not a png" + io.BytesIO(b"x" * 20).getvalue())
    with pytest.raises(InputError, match=r"00000001_001\.png"):
        read_nih(root, verify_images=True)
    assert read_nih(root, verify_images=True, skip_bad=True)["id"].tolist() == [
        "00000001_000",
        "00000002_000",
    ]


def test_mimic_bad_id_names_its_one_based_row(tmp_path):
    root, reports = _mimic(tmp_path, gz=False)
    meta_p = root / "mimic-cxr-2.0.0-metadata.csv"
    meta = pd.read_csv(meta_p)
    meta["subject_id"] = meta["subject_id"].astype(object)
    meta.loc[1, "subject_id"] = "abc"  # the second data row
    meta.to_csv(meta_p, index=False)
    with pytest.raises(InputError, match=r"metadata\.csv.*subject_id.*row 2: not an integer id"):
        read_mimic_cxr(root, reports_root=reports)


def test_missing_image_names_its_one_based_row(tmp_path):
    root = _chexpert(tmp_path)
    victim = sorted(root.rglob("*.jpg"))[0]
    victim.unlink()
    with pytest.raises(InputError, match=r"file not found, row [1-9]"):
        read_chexpert(root)


def _set_label(csv: Path, row: int, column: str, value: object) -> None:
    raw = pd.read_csv(csv)
    raw[column] = raw[column].astype(object)
    raw.loc[row, column] = value
    raw.to_csv(csv, index=False)


@pytest.mark.parametrize(
    ("value", "shown"), [(7.0, "label 7 "), (0.5, "label 0.5 "), ("yes", "label 'yes' ")]
)
def test_chexpert_bad_label_names_csv_column_and_one_based_row(tmp_path, value, shown):
    root = _chexpert(tmp_path)
    _set_label(root / "train.csv", 2, "Edema", value)  # the third data row
    with pytest.raises(InputError) as exc:
        read_chexpert(root)
    msg = str(exc.value)
    assert msg.startswith(f"{root / 'train.csv'}: column 'Edema' row 3: ") and shown in msg, msg
    assert "np." not in msg and "float64" not in msg


def test_chexpert_bad_label_in_valid_csv_counts_its_own_rows(tmp_path):
    root = _chexpert(tmp_path)
    raw = pd.read_csv(root / "train.csv")
    raw.iloc[:2].to_csv(root / "valid.csv", index=False)
    _set_label(root / "valid.csv", 1, "Cardiomegaly", 2)
    with pytest.raises(InputError, match=r"valid\.csv: column 'Cardiomegaly' row 2: label 2 not in"):
        read_chexpert(root)


def test_nih_unknown_finding_names_its_file_row(tmp_path):
    root = _nih(tmp_path)
    next(root.rglob("00000001_000.png")).unlink()  # row 1 has no image: row numbers still count it
    table = root / "Data_Entry_2017_v2020.csv"
    raw = pd.read_csv(table)
    raw.loc[2, "Finding Labels"] = "No Finding|Tumour"
    raw.to_csv(table, index=False)
    with pytest.raises(
        InputError, match=r"Data_Entry_2017_v2020\.csv: column 'Finding Labels' row 3: .*'Tumour'"
    ):
        read_nih(root)
    root2 = _nih(tmp_path / "b")
    next(root2.rglob("00000001_001.png")).unlink()
    with pytest.raises(InputError, match=r"Data_Entry_2017_v2020\.csv: row 2: image '00000001_001\.png'"):
        read_nih(root2, require_all_images=True)


def test_mimic_bad_label_names_label_table_and_row(tmp_path):
    root, reports = _mimic(tmp_path, gz=False)
    _set_label(root / "mimic-cxr-2.0.0-chexpert.csv", 0, "Edema", 3.0)
    with pytest.raises(InputError, match=r"chexpert\.csv: column 'Edema' row 1: label 3 not in"):
        read_mimic_cxr(root, reports_root=reports)


def test_csv_parse_error_names_the_line(tmp_path):
    root = _nih(tmp_path)
    table = root / "Data_Entry_2017_v2020.csv"
    lines = table.read_text().splitlines()
    lines[2] += ",x,y,z"
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        InputError, match=r"Data_Entry_2017_v2020\.csv: line 3 has 14 fields, the header has 11"
    ):
        read_nih(root)


def test_repeated_header_column_is_refused(tmp_path):
    from medaudit.data.cxr.common import read_csv

    p = tmp_path / "t.csv"
    p.write_text("Path,Edema,Edema\na.jpg,1,0\n")
    with pytest.raises(InputError, match=r"t\.csv: column 'Edema' appears 2 times in the header"):
        read_csv(p)
    p.write_text("Path,Edema\na.jpg,1\n")
    assert read_csv(p).columns.tolist() == ["Path", "Edema"]


def test_missing_image_names_the_row_of_its_own_table_not_of_the_combined_one(tmp_path):
    """train.csv and valid.csv are read into one case table: an image missing in valid.csv's first
    data row is 'row 1 of valid.csv', not row 4 (its place after train.csv's three rows)."""
    root = _chexpert(tmp_path)
    raw = pd.read_csv(root / "train.csv")
    valid = raw.iloc[[0]].copy()
    valid["Path"] = "CheXpert-v1.0-small/valid/patient00099/study1/view1_frontal.jpg"  # never written
    valid.to_csv(root / "valid.csv", index=False)
    with pytest.raises(InputError) as err:
        read_chexpert(root)
    msg = str(err.value)
    assert "view1_frontal.jpg: file not found, row 1 of " in msg and msg.endswith("valid.csv"), msg


def test_unreadable_image_names_its_row_in_the_nih_table(tmp_path):
    """An entry whose image is absent is left out of the case table; a corrupt image after it is
    still named by its own data row of Data_Entry_2017*.csv (row 3), not by its case-table row (2)."""
    root = _nih(tmp_path)
    next(root.rglob("00000001_000.png")).unlink()  # row 1: no image (a partial download)
    next(root.rglob("00000002_000.png")).write_bytes(b"not a png at all")  # row 3: corrupt
    with pytest.raises(InputError, match=r"00000002_000\.png: unreadable image .*, row 3 of .*Data_Entry"):
        read_nih(root, verify_images=True)


def test_missing_image_names_its_row_in_the_mimic_metadata_table(tmp_path):
    """With a split kept, the case table holds only the test image; its row is the metadata's (3)."""
    root, reports = _mimic(tmp_path, gz=False)
    next(root.rglob("d3.jpg")).unlink()
    with pytest.raises(InputError, match=r"d3\.jpg: file not found, row 3 of .*metadata\.csv$"):
        read_mimic_cxr(root, reports_root=reports, split="test")


def _add_trailing_commas(csv: Path, header: bool) -> None:
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(s + "," if (i > 0 or header) else s for i, s in enumerate(lines)) + "\n")


def test_trailing_comma_on_every_line_is_read_as_without_it(tmp_path):
    """A trailing comma on every line, header included (NIH's own Data_Entry_2017.csv has one), is an
    empty last column: the case table is exactly the one read without the commas."""
    want = read_nih(_nih(tmp_path / "plain"))
    root = _nih(tmp_path / "commas")
    _add_trailing_commas(root / "Data_Entry_2017_v2020.csv", header=True)
    got = read_nih(root)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got.drop(columns="image"), want.drop(columns="image"))
    want_c = read_chexpert(_chexpert(tmp_path / "c1"))
    root_c = _chexpert(tmp_path / "c2")
    _add_trailing_commas(root_c / "train.csv", header=True)
    got_c = read_chexpert(root_c)
    pd.testing.assert_frame_equal(got_c.drop(columns="image"), want_c.drop(columns="image"))


def test_trailing_comma_on_data_lines_only_is_refused_naming_the_line(tmp_path):
    """Data lines one field longer than the header: pandas would make the first field the index and
    shift every value one column to the left (ids read as labels); refused, naming file and line."""
    root = _nih(tmp_path)
    _add_trailing_commas(root / "Data_Entry_2017_v2020.csv", header=False)
    with pytest.raises(
        InputError, match=r"Data_Entry_2017_v2020\.csv: line 2 has 12 fields, the header has 11"
    ):
        read_nih(root)
    root_c = _chexpert(tmp_path / "c")
    _add_trailing_commas(root_c / "train.csv", header=False)
    with pytest.raises(InputError, match=r"train\.csv: line 2 has \d+ fields, the header has \d+"):
        read_chexpert(root_c)
