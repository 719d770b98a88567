"""A twelfth adversarial sweep of ``medaudit audit``: stop signals that Python swallowed or turned into
other errors, config values that were read as something else or asked for unbounded memory, and DICOM
files that real archives hold; each case failed before its fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit import pipeline
from medaudit.errors import InputError

from .conftest import SRC, make_table, one_line, snapshot
from .conftest import refused as _refused


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_table(tmp_path / "data")
    return tmp_path


def _table(work: Path) -> Path:
    return work / "data" / "cases.csv"


# -- 1. stop signals ----------------------------------------------------------------------------------


def _stop_inside(where: str, monkeypatch: pytest.MonkeyPatch, sig: int) -> None:
    """Deliver ``sig`` while the audit loads its table, with the handler running where Python swallows
    exceptions (``__del__``, as a weakref callback of the import machinery), or turns them into an
    ``ImportError`` (a C extension's initialisation)."""
    real = pipeline.load_case_table

    class _Dying:
        def __del__(self) -> None:
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # the handler runs here, inside __del__
                pass

    def loading(*a: object, **k: object) -> object:
        if where == "__del__":
            _Dying()  # collected at once
        else:
            try:
                os.kill(os.getpid(), sig)
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                raise ImportError("initialization failed") from None
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "load_case_table", loading)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_swallowed_in_a_callback_still_stops_the_run(cli, audit_args, work, monkeypatch, sig):
    """A SIGTERM whose handler ran inside a weakref callback during an import printed ``Exception
    ignored in: <function _get_module_lock.<locals>.cb>`` and a traceback, and the run went on to
    publish its output with exit status 0."""
    _stop_inside("__del__", monkeypatch, sig)
    before = snapshot(work)
    rc, err = cli(*audit_args(_table(work), work / "out"))
    assert rc == 130, err
    assert one_line(err).startswith("interrupted:")
    assert snapshot(work) == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_turned_into_an_import_error_is_an_interruption(
    cli, audit_args, work, monkeypatch, sig
):
    """Ctrl-C while torch's C extension initialised: ``internal error: ImportError: initialization
    failed`` (exit 1)."""
    _stop_inside("import", monkeypatch, sig)
    before = snapshot(work)
    rc, err = cli(*audit_args(_table(work), work / "out"))
    assert rc == 130, err
    assert one_line(err).startswith("interrupted:")
    assert snapshot(work) == before


_SITE = """
import os
import signal
import sys


class _Finder:
    @staticmethod
    def find_spec(name, path, target=None):
        if name == os.environ["H12_MODULE"]:
            if os.environ["H12_HOW"] == "exec":
                exec("raise KeyboardInterrupt")  # Ctrl-C while a dataclass is made during an import
            else:
                os.kill(os.getpid(), getattr(signal, os.environ["H12_HOW"]))
                for _ in range(1000):
                    pass
        return None


sys.meta_path.insert(0, _Finder())
"""


def _python_m(tmp_path: Path, module: str, how: str) -> subprocess.CompletedProcess[str]:
    """``python -m medaudit.cli audit ...`` with ``how`` happening when ``module`` is first imported
    (a ``sitecustomize`` on ``PYTHONPATH`` hooks the import)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITE)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{SRC}", "H12_MODULE": module, "H12_HOW": how}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "medaudit.cli",
            "audit",
            "--table",
            tmp_path / "t.csv",
            "--out",
            tmp_path / "o",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_through_an_exec_during_an_import_exits_130_not_by_sigint(tmp_path):
    """A KeyboardInterrupt that passed through ``exec`` of a string (dataclasses do it while a command's
    modules load) was caught and reported, but CPython 3.11 recorded it as unhandled and ``python -m
    medaudit.cli`` ended by SIGINT: status -2, not 130."""
    p = _python_m(tmp_path, "medaudit.audit.cli", "exec")
    assert p.returncode == 130, (p.returncode, p.stderr)
    assert one_line(p.stderr) == "interrupted: nothing was written"


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_the_command_line_loads_is_one_line_and_130(tmp_path, how):
    """Ctrl-C while ``medaudit.cli`` imported typer, before ``main`` ran: a KeyboardInterrupt traceback
    (status -2); SIGTERM then killed the process (status -15) without a word."""
    p = _python_m(tmp_path, "typer", how)
    assert p.returncode == 130, (p.returncode, p.stderr)
    assert one_line(p.stderr) == "interrupted: nothing was written"
    assert not (tmp_path / "o").exists()


# -- 2. config values read as something else, or asking for unbounded memory --------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("seed: true\n", "'seed'"),
        ("n_slices: yes\n", "'n_slices'"),
        ("fusion_weights: {report: true}\n", "'fusion_weights'"),
    ],
)
def test_true_or_false_for_a_number_in_an_audit_config_is_refused(cli, audit_args, work, text, key):
    """``seed: true`` and ``n_slices: yes`` were read as 1 and the audit ran (exit 0), as texture configs
    did before their fix."""
    cfg = work / "a.yaml"
    cfg.write_text(text)
    line = _refused(cli, audit_args(_table(work), work / "out", "--config", cfg), [work], "a.yaml", key)
    assert "true/false" in line


def test_a_huge_fusion_weight_is_refused_naming_the_key(cli, audit_args, work):
    """``fusion_weights: {report: 1.0e+300}`` overflowed float32: ``warning: overflow encountered in
    cast`` and ``error: embeddings: NaN or infinite value at row 0``, two lines naming neither."""
    cfg = work / "a.yaml"
    cfg.write_text("fusion_weights: {report: 1.0e+300, metadata: 1}\n")
    _refused(cli, audit_args(_table(work), work / "out", "--config", cfg), [work], "fusion_weights.report")


@pytest.mark.parametrize(("value", "why"), [("1001", "[1, 1,000]"), ("1.5", "whole number")])
def test_mixture_restarts_beyond_a_thousand_are_refused_before_any_work(cli, audit_args, work, value, why):
    """``slicer_kwargs: {n_init: 100000000}`` grew past 8 GB of memory before the first EM step."""
    cfg = work / "a.yaml"
    cfg.write_text(f"slicer_kwargs: {{n_init: {value}}}\n")
    _refused(cli, audit_args(_table(work), work / "out", "--config", cfg), [work], "n_init", why)


@pytest.mark.parametrize(
    ("opts", "name"),
    [(["image.size=50000"], "image.size"), (["image.size=2000", "image.batch_size=512"], "image.batch_size")],
)
def test_an_image_input_beyond_the_pixel_limit_is_refused_before_any_work(cli, audit_args, work, opts, name):
    """``--encoder-opt image.size=50000`` asked for 10 GB per image: ``internal error: MemoryError``
    (exit 1) once the first image was read."""
    extra: list[object] = []
    for o in opts:
        extra += ["--encoder-opt", o]
    _refused(cli, audit_args(_table(work), work / "out", *extra), [work], "--encoder-opt", name)


# -- 3. DICOM files that real archives hold -------------------------------------------------------------


RAMP = (np.arange(16 * 16).reshape(16, 16) * 16).astype(np.uint16)


def _dicom(path: Path, meta: bool = True, **elements: object) -> Path:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, generate_uid(), "CR"
    ds.Rows, ds.Columns = RAMP.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for k, v in elements.items():
        setattr(ds, k, v)
    ds.PixelData = RAMP.tobytes()
    if meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    else:  # ACR-NEMA style: no preamble, no meta header, implicit VR little endian
        with open(path, "wb") as fh:
            fp = DicomFileLike(fh)
            fp.is_little_endian, fp.is_implicit_VR = True, True
            write_dataset(fp, ds)
        assert pydicom.dcmread(path, force=True).Rows == 16
    return path


def test_a_dicom_without_preamble_and_meta_header_is_read(tmp_path):
    """An ACR-NEMA file (or a bare dataset an older tool wrote) was refused: ``cannot read image header
    (InvalidDicomError: ... Use force=True to force reading.)``, advice no user can follow."""
    from medaudit.data.images import read_grayscale

    bare = read_grayscale(_dicom(tmp_path / "bare.dcm", meta=False))
    np.testing.assert_array_equal(bare, read_grayscale(_dicom(tmp_path / "full.dcm")))


def test_a_file_named_dicom_that_is_not_one_is_named_without_pydicoms_advice(tmp_path):
    from medaudit.data.images import read_grayscale
    from medaudit.errors import InputError

    p = tmp_path / "x.dcm"
    p.write_text("hello")
    with pytest.raises(InputError, match="not a DICOM file") as e:
        read_grayscale(p)
    assert "force=True" not in str(e.value)


@pytest.mark.parametrize(
    "window",
    [
        {"WindowCenter": "1234", "WindowWidth": "400", "_center": b"abc "},
        {"WindowCenter": "1000", "WindowWidth": "400", "VOILUTFunction": "FOO"},
    ],
)
def test_a_dicom_window_that_cannot_be_applied_is_shown_min_max(tmp_path, window):
    """A Window Center that is not a number (``TypeError: unsupported operand type(s) for -=``) or a VOI
    LUT Function that DICOM does not define (``ValueError: Unsupported ... 'FOO'``) made the image
    unreadable; it is shown min-max scaled, as one whose Window Width is 0."""
    from medaudit.data.images import read_grayscale

    w = dict(window)
    bad_center = w.pop("_center", None)
    p = _dicom(tmp_path / "w.dcm", **w)
    if bad_center is not None:
        p.write_bytes(p.read_bytes().replace(b"1234", bad_center))
    np.testing.assert_array_equal(read_grayscale(p), read_grayscale(_dicom(tmp_path / "plain.dcm")))


# -- 4. medaudit demo: names checked before any work ------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--image-encoder", "nosuch"], "--image-encoder 'nosuch'"),
        (["--report-encoder", "nosuch"], "--report-encoder 'nosuch'"),
        (["--arch", "resnet"], "--arch 'resnet'"),
        (["--class-weight", "heavy"], "--class-weight 'heavy'"),
        (["--attribute", "cardiomegaly"], "--attribute 'cardiomegaly'"),
    ],
)
def test_demo_names_are_refused_before_the_cohort_is_built(cli, tmp_path, flags, named):
    """An unknown ``--image-encoder`` or ``--report-encoder`` was refused only after the cohort was
    built and the classifier trained (minutes, without ``--quick``); ``--arch`` and ``--class-weight``
    after the cohort, not naming the flag; ``--attribute`` equal to ``--task`` was 'training pool too
    small for r=0.7 on 'cardiomegaly'/'cardiomegaly''."""
    args = ["demo", "--quick", "--out", tmp_path / "d", "--cache-dir", tmp_path / "cache", *flags]
    _refused(cli, args, [tmp_path], named)


# -- 5. probabilities exported as percentages ----------------------------------------------------------------


def test_a_probability_column_in_percent_is_named_as_such(cli, audit_args, work):
    """``prob`` as 0-100 was refused as 'probability 26.8 is not in [0, 1]' without saying why."""
    df = pd.read_csv(_table(work))
    df["prob"] = (df["prob"] * 100).round(1)
    t = work / "data" / "pct.csv"
    df.to_csv(t, index=False)
    _refused(cli, audit_args(t, work / "out"), [work], "pct.csv", "column 'prob' row 1", "percentages")


def test_predictions_in_percent_or_with_a_percent_sign_are_named(tmp_path):
    """``--predictions`` with '50%' said "'50%' is not in [0, 1]" (it is not a number at all)."""
    from medaudit.audit.datasets import _map_findings

    pred = pd.DataFrame({"id": ["a", "b"], "Edema": [12.5, 80.0]})
    with pytest.raises(InputError, match=r"12\.5 is not in \[0, 1\]; .*percentages"):
        _map_findings(pred, "id", ["Edema"], tmp_path / "p.csv")
    pred = pd.DataFrame({"id": ["a", "b"], "Edema": ["50%", "0.2"]})
    with pytest.raises(InputError, match=r"'50%' is not a number"):
        _map_findings(pred, "id", ["Edema"], tmp_path / "p.csv")


# -- 6. medaudit bench-scenarios: numbers checked before any work ------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--runs", "0"], "--runs 0"),
        (["--shares", ""], "--shares ''"),
        (["--shares", "0.1,1.5"], "--shares 1.5"),
        (["--slicer-seeds", "0"], "--slicer-seeds 0"),
        (["--min-gap", "nan"], "--min-gap nan"),
        (["--n-train", "0"], "--n-train 0"),
        (["--classifier", "resnet"], "--classifier 'resnet'"),
    ],
)
def test_bench_scenarios_numbers_are_refused_before_any_work(cli, tmp_path, flags, named):
    """``--runs 0`` looped for ever; ``--shares ''`` and ``--slicer-seeds 0`` were ``internal error:
    KeyError: 'kept'`` and ``--min-gap nan`` an internal JSON error, after every run; ``--shares 1.5``,
    ``--n-train 0`` and an unknown ``--classifier`` were refused (not naming the flag) only after the
    cohort had been embedded into ``OUT/cache``, which was left behind. (The cohort named here does not
    exist: the flags are checked first.)"""
    args = ["bench-scenarios", "--out", tmp_path / "b", "--cohort", tmp_path / "none.csv", *flags]
    _refused(cli, args, [tmp_path], named)


# -- follow-ups -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [".", "no"])
def test_reports_the_encoder_cannot_use_give_one_line_not_the_lexicon_warning_too(
    cli, audit_args, work, text
):
    """Reports that are all "." or all "no" printed the lexicon's "may be in another language" warning
    and then the tfidf-svd error: two lines for one bad input."""
    df = pd.read_csv(_table(work))
    df["report"] = text
    t = work / "data" / "bare.csv"
    df.to_csv(t, index=False)
    with warnings.catch_warnings(record=True) as shown:  # pytest records them: the CLI prints them
        warnings.simplefilter("always")
        line = _refused(cli, audit_args(t, work / "out"), [work], "bare.csv", "column 'report'", "tfidf-svd")
    assert "another language" not in line
    assert not [str(w.message) for w in shown if "another language" in str(w.message)]


def test_demo_task_is_refused_before_the_cohort_is_built_naming_the_flag(cli, tmp_path):
    """``--task nosuch`` was "column 'nosuch' not in cohort table; available: id, no_finding, ..." (every
    column of the cohort table), after the cohort had been built into the cache folder."""
    args = ["demo", "--quick", "--out", tmp_path / "d", "--cache-dir", tmp_path / "cache", "--task", "nosuch"]
    line = _refused(cli, args, [tmp_path], "--task 'nosuch'", "cardiomegaly", "pneumothorax")
    assert "image" not in line.split("choose", 1)[-1]  # the findings, not every column


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--ray-address", "bogus://x"], ["--ray-address 'bogus://x'", "HOST:PORT"]),
        (["--n-cases", "3"], ["--n-cases 3", "(1500)"]),
        (["--n-cases", "30", "--n-train", "20", "--n-test", "20"], ["--n-cases 30", "(40)"]),
    ],
)
def test_bench_scenarios_ray_address_and_n_cases_are_refused_before_any_work(cli, tmp_path, flags, named):
    """``--ray-address bogus://x`` was ``internal error: RuntimeError`` (Ray took ``bogus`` for a module);
    ``--n-cases 3`` was refused (not naming the flag) only after the cohort had been built into
    ``OUT/cache``, which was left behind."""
    args = ["bench-scenarios", "--out", tmp_path / "b", "--cohort", tmp_path / "none.csv", *flags]
    _refused(cli, args, [tmp_path], *named)


def _mimic_predictions(cli, tmp_path: Path, text: str, *extra: object) -> str:
    from test_cxr_readers import _mimic

    root, reports = _mimic(tmp_path, gz=False)
    pred = tmp_path / "pred.csv"
    pred.write_text(text)
    args = ["audit", "--dataset", f"mimic-cxr:{root}", "--dataset-reports", reports, "--predictions", pred]
    args += ["--target", "edema", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", *extra]
    return _refused(cli, args, [tmp_path], "pred.csv")


def test_predictions_with_two_id_columns_suggest_pred_id(cli, tmp_path):
    """A predictions table with ``dicom_id`` and ``id`` was refused as "column 'id' is not a finding of
    this dataset"; with ``--pred-id`` naming one, the other id column is ignored."""
    from medaudit.audit.datasets import _map_findings

    line = _mimic_predictions(cli, tmp_path, "dicom_id,id,edema\nd1,c1,0.2\n")
    assert "--pred-id" in line and "'dicom_id'" in line and "'id'" in line, line
    pred = pd.DataFrame({"dicom_id": ["d1"], "id": ["c1"], "edema": [0.2]})
    assert _map_findings(pred, "dicom_id", ["Edema"], tmp_path / "p.csv") == {"edema": "Edema"}


@pytest.mark.parametrize("rows", ["d1;0,2\n", "d1;0.2\n"])
def test_a_semicolon_separated_predictions_file_gets_the_delimiter_hint(cli, tmp_path, rows):
    """Excel's CSV in many European locales (``;``-separated, decimal commas) was "line 2 has 2 fields,
    the header has 1" or "no id column ... columns: dicom_id;edema", with no word on the delimiter."""
    line = _mimic_predictions(cli, tmp_path, "dicom_id;edema\n" + rows)
    assert "looks ';'-separated" in line, line


# -- one check of --ray-address for every command that takes it ------------------------------------------


def test_ray_address_forms():
    """The forms Ray connects to pass; anything else is refused naming the flag (``bogus://x`` reached
    Ray as a module name: an internal RuntimeError)."""
    from medaudit.errors import InputError
    from medaudit.rungrid import check_ray_address

    for ok in (
        None,
        "",
        "local",
        "auto",
        "10.0.0.5:6379",
        "head:6379",
        "ray://head:10001",
        "ray://head",
        "[::1]:6379",
        "anyscale://proj/cluster",
    ):
        check_ray_address(ok)
    for bad in ("bogus://x", "head", "http://head:8265", "ray:// head", "::1:6379"):
        with pytest.raises(InputError, match=r"^--ray-address '"):
            check_ray_address(bad)


def test_audit_and_texture_study_refuse_a_bad_ray_address_before_work(cli, audit_args, work):
    """``audit`` (which embeds images over Ray) and ``texture study`` refused it only where Ray started."""
    before = snapshot(work)
    rc, err = cli(*audit_args(_table(work), work / "out", "--ray-address", "bogus://x"))
    assert rc == 2 and one_line(err).startswith("error: --ray-address 'bogus://x'"), err
    rc, err = cli("texture", "study", "study_small", "--out", work / "s", "--ray-address", "bogus://x")
    assert rc == 2 and one_line(err).startswith("error: --ray-address 'bogus://x'"), err
    assert snapshot(work) == before
