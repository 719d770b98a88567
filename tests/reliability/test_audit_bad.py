"""``medaudit audit``: bad inputs and unsafe outputs fail with exit 2, one line, and nothing changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.outdir import MARKER, claim_output

from .conftest import make_table, one_line, reports_as_files
from .conftest import refused as _refused


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A user's folder: the case table, an unrelated thesis and a notes folder."""
    make_table(tmp_path / "data")
    (tmp_path / "data" / "thesis.tex").write_text("\\documentclass{article}")
    (tmp_path / "data" / "notes").mkdir()
    (tmp_path / "data" / "notes" / "todo.md").write_text("- finish")
    return tmp_path


def test_out_dot_never_deletes_the_working_folder(cli, audit_args, work, monkeypatch):
    monkeypatch.chdir(work / "data")
    _refused(cli, audit_args(Path("cases.csv"), Path(".")), [work], "--out", str(work / "data"))


def test_out_is_the_folder_holding_the_table(cli, audit_args, work):
    line = _refused(cli, audit_args(work / "data" / "cases.csv", work / "data"), [work], "--out")
    assert "cases.csv" in line


def test_out_is_a_regular_file(cli, audit_args, work):
    f = work / "some_file.txt"
    f.write_text("keep me")
    _refused(cli, audit_args(work / "data" / "cases.csv", f), [work], "some_file.txt", "is a file")
    assert f.read_text() == "keep me"


def test_out_under_a_regular_file(cli, audit_args, work):
    f = work / "some_file.txt"
    f.write_text("keep me")
    _refused(cli, audit_args(work / "data" / "cases.csv", f / "sub"), [work], "--out", "some_file.txt")


def test_out_not_writable_fails_at_once_naming_out(cli, audit_args, work):
    _refused(cli, audit_args(work / "data" / "cases.csv", Path("/proc/medaudit-x")), [work], "--out", "/proc")


def test_out_foreign_folder_refused_then_forced(cli, audit_args, work):
    foreign = work / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    _refused(cli, audit_args(work / "data" / "cases.csv", foreign), [work], "--out", "--force")
    rc, err = cli(*audit_args(work / "data" / "cases.csv", foreign, "--force"))
    assert rc == 0, err
    assert (foreign / "slices.json").is_file() and (foreign / "mine.txt").read_text() == "x"  # kept
    assert json.loads((foreign / MARKER).read_text())["kind"] == "audit"


def test_force_never_applies_to_a_folder_holding_the_input(cli, audit_args, work):
    _refused(cli, audit_args(work / "data" / "cases.csv", work / "data", "--force"), [work], "cases.csv")


def test_symlink_and_dotdot_are_resolved_before_containment(cli, audit_args, work):
    link = work / "link"
    link.symlink_to(work / "data")
    _refused(cli, audit_args(work / "data" / "cases.csv", link, "--force"), [work], "cases.csv")
    dotdot = work / "data" / "notes" / ".."
    _refused(cli, audit_args(work / "data" / "cases.csv", dotdot, "--force"), [work], "cases.csv")


def test_image_inside_out_is_refused_even_with_force(cli, audit_args, work):
    imgs = work / "imgs"
    imgs.mkdir()
    df = pd.read_csv(work / "data" / "cases.csv")
    for i in df.index:
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(imgs / f"{i}.png")
    df["image"] = [str(imgs / f"{i}.png") for i in df.index]
    df.to_csv(work / "data" / "cases.csv", index=False)
    _refused(cli, audit_args(work / "data" / "cases.csv", imgs, "--force"), [work], "--out", "imgs")


def test_earlier_audit_output_is_replaced(cli, audit_args, work):
    out = work / "out"
    assert cli(*audit_args(work / "data" / "cases.csv", out))[0] == 0
    (out / "slices.json").write_text("stale")
    rc, err = cli(*audit_args(work / "data" / "cases.csv", out))
    assert rc == 0, err
    assert json.loads((out / "slices.json").read_text())["slices"]
    assert sorted(p.name for p in work.iterdir()) == ["data", "out"]  # no lock, staging or old folder


def test_output_of_another_kind_is_refused(cli, audit_args, work):
    out = work / "evalout"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "texture-eval"}))
    (out / "results.csv").write_text("a,b\n")
    _refused(cli, audit_args(work / "data" / "cases.csv", out), [work], "texture-eval")


def test_concurrent_run_fails_at_once(cli, audit_args, work):
    out = work / "out"
    with claim_output(out, "audit"):
        line = _refused(cli, audit_args(work / "data" / "cases.csv", out), [work / "data"], "--out")
    assert "another medaudit run" in line


def test_stale_staging_is_cleaned_and_foreign_lookalike_kept(cli, audit_args, work):
    stale = work / ".out.staging-dead"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"kind": "audit", "state": "staging"}))
    (stale / "slices.json").write_text("{}")
    os.utime(stale, (1, 1))
    lookalike = work / ".out.staging-users"
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("x")
    rc, err = cli(*audit_args(work / "data" / "cases.csv", work / "out"))
    assert rc == 0, err
    assert not stale.exists() and (lookalike / "keep.txt").exists()


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda df: df.drop(columns=["prob"]), ["prob"]),
        (lambda df: df.assign(label=df["label"].where(df.index != 3, 7)), ["label", "row 4"]),
        (lambda df: df.assign(prob=df["prob"].where(df.index != 5, np.nan)), ["prob", "row 6"]),
        (lambda df: df.assign(prob=df["prob"].where(df.index != 2, 1.5)), ["prob", "row 3"]),
        (lambda df: df.assign(id=df["id"].where(df.index != 4, "c000")), ["id", "c000"]),
        (lambda df: df.iloc[:0], ["cases.csv"]),
        (lambda df: df.assign(report=df["report"].where(df.index != 7, "")), ["report", "row 8"]),
    ],
    ids=[
        "no-prob-column",
        "label-not-binary",
        "prob-nan",
        "prob-out-of-range",
        "duplicate-id",
        "empty",
        "empty-report",
    ],
)
def test_bad_table_rows(cli, audit_args, work, edit, names):
    t = work / "data" / "cases.csv"
    edit(pd.read_csv(t)).to_csv(t, index=False)
    _refused(cli, audit_args(t, work / "out"), [work], "cases.csv", *names)


def test_missing_table(cli, audit_args, work):
    _refused(cli, audit_args(work / "data" / "nope.csv", work / "out"), [work], "nope.csv")


def test_table_is_not_a_table(cli, audit_args, work):
    t = work / "data" / "cases.parquet"
    t.write_bytes(os.urandom(300))
    _refused(cli, audit_args(t, work / "out"), [work], "cases.parquet")


def test_bad_option_values(cli, audit_args, work):
    t = work / "data" / "cases.csv"
    _refused(cli, audit_args(t, work / "out", "--fusion", "bogus"), [work], "--fusion")
    _refused(cli, audit_args(t, work / "out", "--embeddings", "nope"), [work], "--embeddings")
    _refused(cli, audit_args(t, work / "out", "--meta", "no_such_col"), [work], "no_such_col")


def test_embeddings_with_wrong_rows(cli, audit_args, work):
    e = work / "emb.npy"
    np.save(e, np.zeros((3, 4), np.float32))
    (work / "emb.ids.txt").write_text("a\nb\nc\n")
    _refused(
        cli,
        audit_args(work / "data" / "cases.csv", work / "out", "--embeddings", f"report={e}"),
        [work],
        "emb",
    )


def _bomb(path: Path) -> Path:
    """A tiny PNG that declares 10000 x 10000 pixels (all zeros compress to ~100 KB)."""
    Image.new("1", (10000, 10000)).save(path, optimize=True)
    return path


def test_decompression_bomb_is_a_bad_row(cli, audit_args, work, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    df = pd.read_csv(work / "data" / "cases.csv")
    for i in df.index:
        Image.fromarray(np.full((8, 8), i * 5, np.uint8)).save(imgs / f"{i}.png")
    _bomb(imgs / "3.png")
    assert (imgs / "3.png").stat().st_size < 200_000
    df["image"] = [str(imgs / f"{i}.png") for i in df.index]
    t = work / "data" / "cases.csv"
    df.to_csv(t, index=False)
    args = audit_args(
        t, work / "out", "--modalities", "report,metadata,image", "--image-encoder", "efficientnet-lite0"
    )
    line = _refused(cli, args, [work], "row 4", "3.png", "pixels")
    assert "MEDAUDIT_MAX_IMAGE_PIXELS" in line
    # --skip-bad drops the row and counts it; the table check never decodes the bomb
    rc, err = cli(
        *audit_args(t, work / "out", "--skip-bad"),
        "--modalities",
        "report,metadata,image",
        "--image-encoder",
        "efficientnet-lite0",
        "--encoder-opt",
        "image.size=32",
    )
    assert rc == 0, err
    counts = json.loads((work / "out" / "slices.json").read_text())["counts"]
    assert counts["skipped_rows"] == 1


def test_bidi_and_nul_in_report_are_neutralised(cli, audit_args, tmp_path):
    t = make_table(tmp_path / "d", report_extra=" evil\u202egnp.exe\x00end")
    df = pd.read_csv(t)
    df["id"] = [f"c\u202e{i:03d}" for i in df.index]  # ids are listed in the report
    df.to_csv(t, index=False)
    rc, err = cli(*audit_args(t, tmp_path / "out", report=True))
    assert rc == 0, err
    html = (tmp_path / "out" / "report.html").read_text()
    assert "\u202e" not in html and "\x00" not in html
    assert "[U+202E]" in html


def test_every_rendered_value_is_neutralised():
    from medaudit.report.html import environment

    t = environment().from_string("<p title='{{ a }}'>{{ b }}</p>")
    out = t.render(a="x\u2066y", b="<i>\u202edcba\x00\x1b[31m")
    assert out == "<p title='x[U+2066]y'>&lt;i&gt;[U+202E]dcba[U+0000][U+001B][31m</p>"


# -- every option, file and row is checked before the work, whatever the slicer -----------------------


@pytest.mark.parametrize("slicer", ["rules", "both", "mixture"])
def test_empty_report_is_refused_whatever_the_slicer(cli, audit_args, work, slicer):
    t = work / "data" / "cases.csv"
    df = pd.read_csv(t)
    df.loc[6, "report"] = ""
    df.to_csv(t, index=False)
    args = audit_args(t, work / "out", "--slicer", slicer)
    _refused(cli, args, [work], "cases.csv", "column 'report'", "row 7", "empty report")


def test_unreadable_report_file_is_refused_by_the_rule_slicer(cli, audit_args, work):
    t, df = reports_as_files(work)
    (work / "data" / "reports" / "c002.txt").unlink()
    (work / "data" / "reports" / "c002.txt").mkdir()  # a folder where a report file should be
    df.to_csv(t, index=False)
    args = audit_args(t, work / "out", "--slicer", "rules", "--report-path-col", "rpath")
    _refused(cli, args, [work], "cases.csv", "column 'rpath'", "row 3", "c002.txt", "unreadable")


def test_rules_without_a_report_column_still_run(cli, audit_args, work):
    t = work / "data" / "cases.csv"
    pd.read_csv(t).drop(columns=["report"]).to_csv(t, index=False)
    rc, err = cli(*audit_args(t, work / "out", "--slicer", "rules", "--modalities", "metadata"))
    assert rc == 0, err


def test_every_report_empty_with_report_only_names_table_and_column(cli, audit_args, work):
    t = work / "data" / "cases.csv"
    pd.read_csv(t).assign(report="").to_csv(t, index=False)
    args = audit_args(t, work / "out", "--modalities", "report", "--slicer", "mixture")
    _refused(cli, args, [work], "cases.csv", "column 'report'", "every report is empty")


@pytest.mark.parametrize("device", ["tpu:7", "cuda:99", "gpu"])
@pytest.mark.parametrize("slicer", ["rules", "mixture"])
def test_bad_device_is_refused_before_any_work(cli, audit_args, work, device, slicer, monkeypatch):
    import medaudit.audit.pipeline as pipeline

    def never(*a, **k):
        raise AssertionError("the audit started")

    monkeypatch.setattr(pipeline, "run_audit", never)
    args = audit_args(work / "data" / "cases.csv", work / "out", "--slicer", slicer, "--device", device)
    _refused(cli, args, [work], "--device", device)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--y-weight", "nan"),
        ("--y-hat-weight", "inf"),
        ("--y-weight", "-1"),
        ("--min-slice-size", "nan"),
        ("--min-slice-size", "inf"),
    ],
)
def test_non_finite_or_negative_numbers_name_their_flag(cli, audit_args, work, flag, value):
    line = _refused(cli, audit_args(work / "data" / "cases.csv", work / "out", flag, value), [work], flag)
    assert "AuditConfig" not in line and "command line" not in line


@pytest.mark.parametrize(
    ("yaml", "key"),
    [
        ("merge_jaccard: .nan", "merge_jaccard"),
        ("membership_threshold: .inf", "membership_threshold"),
        ("threshold: .nan", "threshold"),
        ("y_hat_weight: -.inf", "y_hat_weight"),
        ("fusion_weights: {report: .nan}", "fusion_weights"),
        ("fusion_weights: {report: -1}", "fusion_weights"),
        ("slicer_kwargs: {alpha: .nan}", "alpha"),
        ("slicer_kwargs: {alpha: 1.5}", "alpha"),
        ("encoder_kwargs: {report: {dim: 0}}", "report.dim"),
    ],
)
def test_bad_numbers_in_a_config_file_name_file_and_key(cli, audit_args, work, yaml, key):
    cfg = work / "data" / "audit.yaml"
    cfg.write_text(yaml + "\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg)
    _refused(cli, args, [work], "audit.yaml", key)


@pytest.mark.parametrize(
    ("opt", "names"),
    [
        ("report.dim=-5", ["--encoder-opt report.dim", "positive integer"]),
        ("image.size=-5", ["--encoder-opt image.size", "positive integer"]),
        ("image.size=NaN", ["--encoder-opt image.size"]),
        ("image.resize_mode=zoom", ["--encoder-opt image.resize_mode", "crop"]),
        ("report.no_such=1", ["--encoder-opt report.no_such", "tfidf-svd"]),
    ],
)
def test_encoder_options_are_checked_before_any_work(cli, audit_args, work, opt, names, monkeypatch):
    import medaudit.audit.pipeline as pipeline

    def never(*a, **k):
        raise AssertionError("the table was read")

    monkeypatch.setattr(pipeline, "load_case_table", never)
    args = audit_args(work / "data" / "cases.csv", work / "out", "--encoder-opt", opt, "--slicer", "mixture")
    _refused(cli, args, [work], *names)


def test_csv_line_with_extra_fields(cli, audit_args, work):
    t = work / "data" / "cases.csv"
    lines = t.read_text().splitlines()
    lines[4] += ",extra,more"
    t.write_text("\n".join(lines) + "\n")
    _refused(cli, audit_args(t, work / "out"), [work], "cases.csv", "line 5 has 8 fields, the header has 6")


def test_duplicate_header_column(cli, audit_args, work):
    t = work / "data" / "cases.csv"
    df = pd.read_csv(t)
    df.insert(2, "label_again", df["label"])
    df.to_csv(t, index=False)
    t.write_text(t.read_text().replace("label_again", "label", 1))
    _refused(cli, audit_args(t, work / "out"), [work], "cases.csv", "column 'label'", "2 times")


def test_malformed_jsonl_table(cli, audit_args, work):
    t = work / "data" / "cases.jsonl"
    pd.read_csv(work / "data" / "cases.csv").to_json(t, orient="records", lines=True)
    lines = t.read_text().splitlines()
    lines[5] = lines[5][:30]
    t.write_text("\n".join(lines) + "\n")
    _refused(cli, audit_args(t, work / "out"), [work], "cases.jsonl", "line 6", "not valid JSON")


def test_table_that_is_a_folder(cli, audit_args, work):
    _refused(cli, audit_args(work / "data" / "notes", work / "out"), [work], "notes", "is a folder")


def test_embeddings_ids_file_not_utf8(cli, audit_args, work):
    e = work / "emb.npy"
    np.save(e, np.zeros((40, 4), np.float32))
    (work / "emb.ids.txt").write_bytes("".join(f"c{i:03d}\n" for i in range(39)).encode() + b"\xe9t\xe9\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--embeddings", f"report={e}")
    _refused(cli, args, [work], "emb.ids.txt", "line 40", "UTF-8")


def test_text_file_given_as_npy_embeddings(cli, audit_args, work):
    e = work / "emb.npy"
    e.write_text("0.1 0.2 0.3\n")
    (work / "emb.ids.txt").write_text("c000\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--embeddings", f"report={e}")
    line = _refused(cli, args, [work], "emb.npy", "not a .npy array file")
    assert "pickle" not in line


@pytest.mark.parametrize("encoder", ["efficientnet-lite0", "xrv-densenet121"])
def test_null_image_size_in_a_config_names_file_and_key(cli, audit_args, work, encoder):
    """These encoders resize every image to a fixed square: ``size: null`` is refused before any work
    (it used to pass the config check and fail while embedding)."""
    cfg = work / "data" / "audit.yaml"
    cfg.write_text(f"encoders: {{image: {encoder}}}\nencoder_kwargs: {{image: {{size: null}}}}\n")
    args = audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg)
    line = _refused(cli, args, [work], "audit.yaml", "encoder_kwargs.image.size", encoder)
    assert "open-clip" in line  # the encoder that does take null is named


def test_null_image_size_on_the_command_line_names_the_flag(cli, audit_args, work):
    args = audit_args(work / "data" / "cases.csv", work / "out", "--encoder-opt", "image.size=null")
    _refused(cli, args, [work], "--encoder-opt image.size=null", "efficientnet-lite0")


def test_null_image_size_is_kept_for_open_clip(cli, audit_args, work):
    """open-clip takes ``size: null`` (the model's own input size): the config is accepted."""
    cfg = work / "data" / "audit.yaml"
    cfg.write_text("encoders: {image: open-clip}\nencoder_kwargs: {image: {size: null}}\n")
    rc, err = cli(*audit_args(work / "data" / "cases.csv", work / "out", "--config", cfg))
    assert rc == 0, err
    assert (work / "out" / "slices.json").is_file()


def test_image_encoder_without_a_size_is_refused_in_python():
    from medaudit.audit.encoders import EfficientNetLite0Encoder
    from medaudit.errors import InputError

    with pytest.raises(InputError, match="efficientnet-lite0: size must be a positive integer"):
        EfficientNetLite0Encoder(weights=None, size=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("flag", ["--table", "--config"])
def test_symlink_loop_as_an_input_is_named_as_such(cli, audit_args, work, flag):
    """A link that leads back to itself is not 'not found' (the user sees the file there): the line
    says it is a symlink loop, naming the path."""
    loop = work / "data" / "loop.csv"
    loop.symlink_to(loop.name)
    if flag == "--table":
        args = audit_args(loop, work / "out")
    else:
        args = audit_args(work / "data" / "cases.csv", work / "out", "--config", loop)
    line = _refused(cli, args, [work], str(loop), "symlink loop")
    assert "not found" not in line


def test_broken_symlink_as_the_table_is_named_as_such(cli, audit_args, work):
    link = work / "data" / "link.csv"
    link.symlink_to(work / "data" / "moved-away.csv")
    line = _refused(cli, audit_args(link, work / "out"), [work], str(link), "broken symbolic link")
    assert "moved-away.csv" in line


def test_text_in_the_probability_column_is_named_as_not_a_number(cli, audit_args, work):
    t = work / "data" / "cases.csv"
    df = pd.read_csv(t)
    df["prob"] = df["prob"].astype(object)
    df.loc[3, "prob"] = "high"
    df.to_csv(t, index=False)
    _refused(
        cli, audit_args(t, work / "out"), [work], "cases.csv", "column 'prob' row 4", "'high' is not a number"
    )


def test_metadata_column_empty_in_every_row_names_table_and_column(cli, audit_args, work):
    """It used to fail inside the metadata encoder, naming neither the table nor the flag."""
    t = work / "data" / "cases.csv"
    df = pd.read_csv(t)
    df["view"] = np.nan
    df.to_csv(t, index=False)
    _refused(cli, audit_args(t, work / "out"), [work], "cases.csv", "column 'view'", "every row", "--meta")


def test_table_with_only_a_header_is_one_line(audit_args, work):
    """No data row: one line on stderr saying so (a vacuous 'every report is empty' warning came
    first; in a subprocess, as a user sees it: the warning does not reach pytest's captured stderr)."""
    from .conftest import run_sub

    t = work / "data" / "cases.csv"
    t.write_text(t.read_text().splitlines()[0] + "\n")
    proc = run_sub(audit_args(t, work / "out"))
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert "cases.csv" in line and "0 valid cases" in line and "report" not in line
    assert not (work / "out").exists()


def _images_with_a_truncated_one(work: Path, tmp_path: Path, bad: int = 3) -> Path:
    """The table's cases get 64x64 PNGs; row ``bad + 1``'s is cut in half (its header still reads)."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    df = pd.read_csv(work / "data" / "cases.csv")
    rng = np.random.default_rng(0)
    for i in df.index:
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(imgs / f"{i}.png")
    data = (imgs / f"{bad}.png").read_bytes()
    (imgs / f"{bad}.png").write_bytes(data[: len(data) // 2])
    df["image"] = [str(imgs / f"{i}.png") for i in df.index]
    t = work / "data" / "cases.csv"
    df.to_csv(t, index=False)
    return t


_IMAGE_FAST = ["--modalities", "report,metadata,image", "--image-encoder", "efficientnet-lite0"]
_IMAGE_FAST += ["--encoder-opt", "image.size=32", "--encoder-opt", "image.batch_size=4"]


def test_image_that_cannot_be_decoded_names_image_and_row(cli, audit_args, work, tmp_path, monkeypatch):
    """It passes the table's checks (its header reads) and fails while embedding: the line names the
    table, the image column, the row and the image (it used to name the image alone); ``--skip-bad``
    drops it (it used to fail the same way), with one warning, from every modality, and no image is
    decoded twice for it."""
    import medaudit.audit.encoders.image as image_mod

    t = _images_with_a_truncated_one(work, tmp_path)
    line = _refused(cli, audit_args(t, work / "out", *_IMAGE_FAST), [work], "cases.csv", "column 'image'")
    assert "row 4 (id 'c003')" in line and "3.png" in line and "truncated" in line

    reads: list[str] = []
    real = image_mod.read_grayscale

    def counting(path):
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(image_mod, "read_grayscale", counting)
    cache = tmp_path / "cache"  # nothing cached yet: every image is read
    with pytest.warns(UserWarning, match=r"cases\.csv: 1 image\(s\) cannot be decoded.*row 4 \(id 'c003'\)"):
        rc, err = cli(*audit_args(t, work / "out", *_IMAGE_FAST, "--skip-bad", "--cache-dir", cache))
    assert rc == 0, err
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 40  # each image read once
    payload = json.loads((work / "out" / "slices.json").read_text())
    assert payload["counts"]["skipped_rows"] == 1
    assert payload["counts"]["skipped_reasons"] == {"unreadable image": 1}
    assert payload["counts"]["cases"] == 39
    assert any("row 4" in w for w in payload["warnings"])
    members = pd.read_parquet(work / "out" / "membership.parquet")
    assert "c003" not in set(members["id"]) and len(members) == 39


def test_folder_given_as_an_image_is_named_as_a_folder(cli, audit_args, work, tmp_path):
    """It said 'missing or unreadable' (the user sees it there)."""
    t = _images_with_a_truncated_one(work, tmp_path)
    (tmp_path / "imgs" / "3.png").unlink()
    (tmp_path / "imgs" / "3.png").mkdir()
    line = _refused(cli, audit_args(t, work / "out", *_IMAGE_FAST), [work], "cases.csv", "row 4", "3.png")
    assert "is a folder, not an image file" in line and "missing" not in line


def test_unreadable_image_names_its_path_once(cli, audit_args, work, tmp_path):
    """Pillow's 'cannot identify image file PATH' repeated the path inside the parentheses."""
    t = _images_with_a_truncated_one(work, tmp_path)
    bad = tmp_path / "imgs" / "3.png"
    bad.write_bytes(b"not an image at all" * 10)
    line = _refused(
        cli, audit_args(t, work / "out", *_IMAGE_FAST), [work], "cases.csv", "row 4", "cannot identify"
    )
    assert line.count(str(bad)) == 1, line


def test_unwritable_cache_dir_is_named_as_the_cache(cli, audit_args, work, tmp_path_factory, monkeypatch):
    """It said '<cache>/<encoder-folder>: Permission denied', without saying that is --cache-dir (root
    ignores permissions: the refusal is simulated)."""
    import errno
    import tempfile

    import medaudit.io

    cache = tmp_path_factory.mktemp("denied") / "cache"
    real = tempfile.mkstemp

    def denied(*args, **kw):
        if str(kw.get("dir", "")).startswith(str(cache)):
            raise PermissionError(errno.EACCES, "Permission denied", str(kw["dir"]))
        return real(*args, **kw)

    monkeypatch.setattr(medaudit.io.tempfile, "mkstemp", denied)
    line = _refused(
        cli,
        audit_args(work / "data" / "cases.csv", work / "out", "--cache-dir", cache),
        [work],
        "Permission denied",
    )
    assert line.startswith(f"error: --cache-dir {cache}: "), line


def _in_process_actors(encoder, ids, items, todo, folder, address, num_workers, batch_size, threads):
    """``distributed._run_actors`` without Ray: the same actor class, over the same batches, in-process."""
    from medaudit.audit.encoders.distributed import _ShardWriter

    rows = pd.DataFrame([{"key": k, "id": str(ids[p]), "x": str(items[p])} for k, p in todo.items()])
    writer = _ShardWriter(encoder, str(folder))
    res = pd.concat([writer(rows.iloc[i : i + batch_size]) for i in range(0, len(rows), batch_size)])
    bad = {k: why for b in res["bad"] for k, why in json.loads(b)}
    assert int(res["rows"].sum()) + len(bad) == len(rows)
    return bad


def test_image_that_cannot_be_decoded_on_ray_names_image_and_row(
    cli, audit_args, work, tmp_path, monkeypatch
):
    """With ``--ray-address`` the actor leaves the image out of its shard and reports it (it used to fail
    inside Ray, naming the image and case alone); the driver names the table and row, or ``--skip-bad``
    skips it as without Ray."""
    import medaudit.audit.encoders.distributed as dist

    monkeypatch.setattr(dist, "_run_actors", _in_process_actors)
    t = _images_with_a_truncated_one(work, tmp_path)
    ray = ["--ray-address", "local"]
    line = _refused(
        cli, audit_args(t, work / "out", *_IMAGE_FAST, *ray), [work], "cases.csv", "column 'image'"
    )
    assert "row 4 (id 'c003')" in line and "3.png" in line and "truncated" in line
    with pytest.warns(UserWarning, match=r"cases\.csv: 1 image\(s\) cannot be decoded.*row 4 \(id 'c003'\)"):
        rc, err = cli(*audit_args(t, work / "out", *_IMAGE_FAST, *ray, "--skip-bad"))
    assert rc == 0, err
    payload = json.loads((work / "out" / "slices.json").read_text())
    assert payload["counts"]["skipped_reasons"] == {"unreadable image": 1}
    assert payload["counts"]["cases"] == 39
    members = pd.read_parquet(work / "out" / "membership.parquet")
    assert "c003" not in set(members["id"]) and len(members) == 39
