"""Readers and validation for 3D volumes (dHCP, NIfTI folder, CSV) on tiny replicas built here."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from medaudit.data import mri as td
from medaudit.errors import InputError

AFF = np.array([[-2.0, 0, 0, 30.0], [0, 2.0, 0, -20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])


def _save(path, arr, affine=AFF, dtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr if dtype is None else arr.astype(dtype), affine)
    nib.save(img, str(path))
    return path


def _pair(shape=(12, 14, 10), values=(0, 1, 2, 3), seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.choice(np.array(values), size=shape).astype(np.int16)
    img = (lab * 100 + rng.normal(0, 5, shape)).astype(np.float32)
    return img, lab


def _dhcp(root, sessions=(("01", "1"), ("02", "2")), t1_missing=("02",)):
    pipe = root / "derivatives" / "dhcp_anat_pipeline"
    for sub, ses in sessions:
        anat = pipe / f"sub-{sub}" / f"ses-{ses}" / "anat"
        img, lab = _pair(values=tuple(range(10)), seed=int(sub))
        stem = f"sub-{sub}_ses-{ses}"
        _save(anat / f"{stem}_T2w.nii.gz", img)
        _save(anat / f"{stem}_desc-restore_T2w.nii.gz", img + 1)
        _save(anat / f"{stem}_desc-drawem9_dseg.nii.gz", lab)
        _save(anat / f"{stem}_desc-brain_mask.nii.gz", (lab > 0).astype(np.uint8))
        if sub not in t1_missing:
            _save(anat / f"{stem}_T1w.nii.gz", img)
        (pipe / f"sub-{sub}").mkdir(exist_ok=True)
        (pipe / f"sub-{sub}" / f"sub-{sub}_sessions.tsv").write_text(
            f"session_id\tscan_age\tradiology_score\n{ses}\t4{sub}.5\t1\n"
        )
    (pipe / "participants.tsv").write_text(
        "participant_id\tbirth_age\tsex\n01\t39.1\tfemale\n02\t35.0\tmale\n"
    )
    return pipe


def test_dhcp_reader_prefers_restore_and_reads_metadata(tmp_path):
    _dhcp(tmp_path)
    cases = td.read_dhcp(tmp_path)
    assert [c.case_id for c in cases] == ["sub-01_ses-1", "sub-02_ses-2"]
    assert cases[0].image.name == "sub-01_ses-1_desc-restore_T2w.nii.gz"
    assert cases[0].label.name.endswith("_desc-drawem9_dseg.nii.gz")
    assert cases[0].mask.name.endswith("_desc-brain_mask.nii.gz")
    assert cases[0].meta["sex"] == "female" and cases[1].meta["birth_age"] == "35.0"
    assert cases[0].meta["scan_age"] == "401.5"
    # the pipeline folder itself is accepted as root; raw T2w when restore is not preferred
    raw = td.read_dhcp(tmp_path / "derivatives" / "dhcp_anat_pipeline", prefer_restore=False)
    assert raw[0].image.name == "sub-01_ses-1_T2w.nii.gz"
    # T1w is optional: the session without it is skipped
    t1 = td.read_dhcp(tmp_path, modality="T1w")
    assert [c.case_id for c in t1] == ["sub-01_ses-1"]


def test_dhcp_label_sets_and_merge(tmp_path):
    _dhcp(tmp_path)
    case = td.read_dhcp(tmp_path)[0]
    raw = nib.load(str(case.label)).get_fdata().astype(int)
    full = td.load_case(case, label_set="drawem9")
    assert np.array_equal(full["label"][0].numpy(), raw)
    merged = td.load_case(case, label_set="drawem9-tissue")["label"][0].numpy()
    expect = np.select([np.isin(raw, [0, 4]), np.isin(raw, [1, 5]), raw == 2, raw == 3], [0, 1, 2, 3], 4)
    assert np.array_equal(merged, expect)
    assert full["image"].shape == (1, 12, 14, 10)
    assert full["spacing"] == (2.0, 2.0, 2.0)
    assert float(full["image"].min()) >= 0.0 and float(full["image"].max()) <= 1.0


def test_dhcp_missing_layout_errors(tmp_path):
    with pytest.raises(InputError, match="no sub-"):
        td.read_dhcp(tmp_path)
    anat = tmp_path / "sub-01" / "ses-1" / "anat"
    img, _ = _pair()
    _save(anat / "sub-01_ses-1_T2w.nii.gz", img)
    with pytest.raises(InputError, match="drawem9_dseg"):
        td.read_dhcp(tmp_path)


def test_folder_reader_patterns(tmp_path):
    for cid in ("a1", "b2"):
        img, lab = _pair()
        _save(tmp_path / "images" / f"{cid}.nii.gz", img)
        _save(tmp_path / "labels" / f"{cid}.nii.gz", lab)
        _save(tmp_path / "flat" / f"{cid}_img.nii.gz", img)
        _save(tmp_path / "flat" / f"{cid}_seg.nii.gz", lab)
    cases = td.read_nifti_folder(tmp_path)
    assert [(c.case_id, c.label.name) for c in cases] == [("a1", "a1.nii.gz"), ("b2", "b2.nii.gz")]
    flat = td.read_nifti_folder(tmp_path / "flat", "{id}_img.nii.gz", "{id}_seg.nii.gz")
    assert [c.case_id for c in flat] == ["a1", "b2"]
    (tmp_path / "labels" / "b2.nii.gz").unlink()
    with pytest.raises(InputError, match=r"b2\.nii\.gz: no label"):
        td.read_nifti_folder(tmp_path)


def test_csv_reader(tmp_path):
    img, lab = _pair()
    _save(tmp_path / "v" / "x.nii.gz", img)
    _save(tmp_path / "v" / "x_lab.nii.gz", lab)
    (tmp_path / "pairs.csv").write_text("id,image,label,site\ncase1,v/x.nii.gz,v/x_lab.nii.gz,A\n")
    cases = td.read_csv_pairs(tmp_path / "pairs.csv")
    assert cases[0].case_id == "case1" and cases[0].meta == {"site": "A"}
    assert cases[0].image == tmp_path / "v" / "x.nii.gz"
    (tmp_path / "bad.csv").write_text("id,image,label\ncase1,v/x.nii.gz,v/missing.nii.gz\n")
    with pytest.raises(InputError, match=r"bad\.csv: line 2: file not found"):
        td.read_csv_pairs(tmp_path / "bad.csv")
    (tmp_path / "nocol.csv").write_text("id,img\n1,v/x.nii.gz\n")
    with pytest.raises(InputError, match="missing column 'image'"):
        td.read_csv_pairs(tmp_path / "nocol.csv")


def test_csv_reader_line_longer_than_the_header(tmp_path):
    """A trailing comma the header lacks (or a shifted line) was read with the extra field dropped."""
    img, lab = _pair()
    _save(tmp_path / "v" / "x.nii.gz", img)
    _save(tmp_path / "v" / "x_lab.nii.gz", lab)
    (tmp_path / "p.csv").write_text("id,image,label\ncase1,v/x.nii.gz,v/x_lab.nii.gz,\n")
    with pytest.raises(InputError, match=r"p\.csv: line 2 has 4 fields, the header has 3"):
        td.read_csv_pairs(tmp_path / "p.csv")
    commas = "id,image,label,\ncase1,v/x.nii.gz,v/x_lab.nii.gz,\n"  # a trailing comma on every line
    (tmp_path / "q.csv").write_text(commas)
    assert [c.case_id for c in td.read_csv_pairs(tmp_path / "q.csv")] == ["case1"]


def _case(tmp_path, img, lab, img_aff=AFF, lab_aff=AFF):
    i = _save(tmp_path / "img.nii.gz", img, img_aff)
    la = _save(tmp_path / "lab.nii.gz", lab, lab_aff)
    return td.VolumeCase("c", i, la)


def test_shape_mismatch_names_file(tmp_path):
    img, lab = _pair()
    case = _case(tmp_path, img, lab[:, :, :-1])
    with pytest.raises(InputError, match=r"lab\.nii\.gz: label shape"):
        td.load_case(case)


def test_affine_mismatch_names_file(tmp_path):
    img, lab = _pair()
    aff2 = AFF.copy()
    aff2[0, 3] += 5
    with pytest.raises(InputError, match=r"lab\.nii\.gz: label affine"):
        td.load_case(_case(tmp_path, img, lab, lab_aff=aff2))


def test_unreadable_nifti_names_file(tmp_path):
    img, lab = _pair()
    case = _case(tmp_path, img, lab)
    case.image.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(InputError, match=r"img\.nii\.gz: unreadable NIfTI"):
        td.load_case(case)


def test_label_value_outside_set(tmp_path):
    img, lab = _pair()
    lab[0, 0, 0] = 7
    with pytest.raises(
        InputError, match=r"lab\.nii\.gz: label value\(s\) \[7\] outside the declared set 'tissue4'"
    ):
        td.load_case(_case(tmp_path, img, lab))
    assert td.load_case(_case(tmp_path, img, lab), label_set="drawem9")["label"].max() == 7


def test_small_volume_pad_or_error(tmp_path):
    img, lab = _pair(shape=(12, 14, 10))
    case = _case(tmp_path, img, lab)
    with pytest.warns(UserWarning, match="zero-padding"):
        out = td.load_case(case, min_shape=(16, 16, 16))
    assert out["image"].shape == (1, 16, 16, 16) and out["label"].shape == (1, 16, 16, 16)
    with pytest.raises(
        InputError, match=r"img\.nii\.gz: volume shape \(12, 14, 10\) is smaller than the patch"
    ):
        td.load_case(case, min_shape=(16, 16, 16), small_policy="error")


def test_resample_to_working_spacing(tmp_path):
    img, lab = _pair(shape=(12, 14, 10))
    out = td.load_case(_case(tmp_path, img, lab), spacing=4.0)
    assert out["spacing"] == pytest.approx((4.0, 4.0, 4.0))
    assert out["image"].shape == (1, 6, 7, 5)
    assert set(np.unique(out["label"].numpy())) <= {0, 1, 2, 3}


def test_mni_phantom_cohort_cached(tmp_path):
    cases = td.build_mni_phantom(tmp_path, n_subjects=2, spacing=6.0, seed=3)
    assert [c.case_id for c in cases] == ["phantom-000", "phantom-001"]
    a, b = (td.load_case(c) for c in cases)
    assert a["spacing"] == pytest.approx((6.0, 6.0, 6.0))
    assert set(np.unique(a["label"].numpy())) == {0, 1, 2, 3}
    assert not np.array_equal(a["label"].numpy(), b["label"].numpy())  # distinct deformations
    mtime = cases[0].image.stat().st_mtime_ns
    again = td.build_mni_phantom(tmp_path, n_subjects=2, spacing=6.0, seed=3)
    assert again[0].image == cases[0].image and again[0].image.stat().st_mtime_ns == mtime
    manifest = cases[0].image.parent / "manifest.json"
    data = json.loads(manifest.read_text())
    assert data["max_displacement"] == 6.0
    data["cases"][1]["label"] = None  # a damaged cache is rebuilt, not a crash
    manifest.write_text(json.dumps(data))
    rebuilt = td.build_mni_phantom(tmp_path, n_subjects=2, spacing=6.0, seed=3)
    assert all(c.label is not None and c.label.is_file() for c in rebuilt)


def test_empty_volume_and_folder_named(tmp_path):
    p = tmp_path / "z.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 0, 16), np.float32), AFF), str(p))
    with pytest.raises(InputError, match=r"z\.nii\.gz: empty volume, shape \(16, 0, 16\)"):
        td._read_data(td.load_nifti(p), p)
    with pytest.raises(InputError, match="a folder, not a NIfTI file"):
        td.load_nifti(tmp_path)


def test_csv_reader_names_physical_lines_after_blank_and_multiline_rows(tmp_path):
    """Blank lines and quoted multi-line fields do not shift the line named in an error."""
    img, lab = _pair()
    _save(tmp_path / "v" / "x.nii.gz", img)
    _save(tmp_path / "v" / "x_lab.nii.gz", lab)
    text = 'id,image,label,note\n\ncase1,v/x.nii.gz,v/x_lab.nii.gz,"two\nlines"\n\ncase2,v/x.nii.gz,v/gone.nii.gz,x\n'
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(InputError, match=r"p\.csv: line 6: file not found"):
        td.read_csv_pairs(tmp_path / "p.csv")
