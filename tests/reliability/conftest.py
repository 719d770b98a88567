"""Shared fixtures of the bad-input and fault suite: tiny inputs built once per session.

Each case runs the real command line (``medaudit.cli.main`` in process, or ``python -m medaudit.cli`` in a
subprocess for the fault tests) and checks three things: the exit status, a one-line message that names
the file, column or row at fault, and that nothing was left behind (directory listings before == after).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medaudit.cli import main

AFF = np.array([[0, 0, 3.0, -40.0], [-3.0, 0, 0, 25.0], [0, 3.0, 0, -12.0], [0, 0, 0, 1]])
SRC = str(Path(__file__).resolve().parents[2] / "src")

WORDS = ["effusion", "cardiomegaly", "atelectasis", "tube", "clear", "nodule", "edema", "normal"]


def snapshot(*roots: Path) -> dict[str, tuple[str, int, int]]:
    """Every path under ``roots`` (hidden ones too) with its type, size and mtime."""
    out: dict[str, tuple[str, int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                kind = "link" if p.is_symlink() else ("dir" if p.is_dir() else "file")
                out[str(p)] = (kind, 0 if kind == "dir" else st.st_size, st.st_mtime_ns)
    return out


def one_line(err: str) -> str:
    """The single non-empty line of ``err``; fails if there are more."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err}"
    return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """Run ``medaudit ARGS`` in process; return (exit status, stderr)."""

    def run(*args: object) -> tuple[int, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        return rc, capsys.readouterr().err

    return run


def run_sub(args: list[object], env: dict[str, str] | None = None, cwd: Path | None = None):
    """``python -m medaudit.cli ARGS`` in a subprocess (for kills and signals)."""
    e = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "medaudit.cli", *map(str, args)],
        env=e,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        # a shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it:
        # give the command the default disposition, as it has when started from a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


# -- audit inputs -----------------------------------------------------------------------------------


def reports_as_files(work: Path, folder: str = "reports") -> tuple[Path, pd.DataFrame]:
    """Write each report of ``work/data/cases.csv`` to ``data/<folder>/<id>.txt``; returns the table's
    path and the table with an ``rpath`` column in place of ``report`` (not yet written back)."""
    t = work / "data" / "cases.csv"
    df = pd.read_csv(t)
    (work / "data" / folder).mkdir()
    for i, text in zip(df["id"], df["report"], strict=True):
        (work / "data" / folder / f"{i}.txt").write_text(text)
    df["rpath"] = [f"{folder}/{i}.txt" for i in df["id"]]
    return t, df.drop(columns=["report"])


def make_table(folder: Path, n: int = 40, seed: int = 0, report_extra: str = "") -> Path:
    """A tiny case table (report text + metadata), ``folder/cases.csv``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    label = rng.integers(0, 2, n)
    rows = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS, 4))
        wrong = i % 6 == 0  # a sixth of the cases misclassified: an audit needs failures to find
        prob = float(np.clip(abs(label[i] - wrong) * 0.6 + rng.uniform(0, 0.4), 0.01, 0.99))
        rows.append(
            {
                "id": f"c{i:03d}",
                "label": int(label[i]),
                "prob": prob,
                "report": f"{words}.{report_extra if i == 0 else ''}",
                "view": rng.choice(["PA", "AP"]),
                "age": int(rng.integers(20, 90)),
            }
        )
    p = folder / "cases.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


AUDIT_FAST = [
    "--modalities",
    "report,metadata",
    "--meta",
    "view,age",
    "--report-encoder",
    "tfidf-svd",
    "--n-components",
    "4",
    "--n-slices",
    "2",
    "--pca",
    "0",
]


@pytest.fixture(scope="session")
def audit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-cache")


@pytest.fixture
def audit_args(audit_cache: Path) -> Callable[..., list[object]]:
    """``audit --table T --out O`` plus the fast settings (report off unless ``report=True``)."""

    def args(table: Path, out: Path, *extra: object, report: bool = False) -> list[object]:
        base: list[object] = [
            "audit",
            "--table",
            table,
            "--out",
            out,
            *AUDIT_FAST,
            "--cache-dir",
            audit_cache,
        ]
        return base + ([] if report else ["--no-report"]) + list(extra)

    return args


# -- texture inputs ---------------------------------------------------------------------------------


def make_volumes(root: Path, n: int = 5, shape: tuple[int, int, int] = (20, 18, 16)) -> Path:
    """Blob phantoms with tissue4 labels under ``root/images`` and ``root/labels``."""
    rng = np.random.default_rng(7)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        r0 = rng.uniform(5.5, 7.0)
        lab = np.select([r < r0 - 3, r < r0 - 1.5, r < r0], [3, 2, 1], 0).astype(np.uint8)
        img = np.choose(lab, [0.0, 0.25, 0.55, 0.9]) + rng.normal(0, 0.03, shape)
        nib.save(nib.Nifti1Image(img.astype(np.float32), AFF), str(root / "images" / f"s{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, AFF), str(root / "labels" / f"s{i}.nii.gz"))
    return root


def train_config(data: Path, **kw: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "data_source": "folder",
        "data_path": str(data),
        "label_set": "tissue4",
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "channels": [4, 8],
        "num_res_units": 0,
        "patch_size": [16, 16, 16],
        "batch_size": 2,
        "iterations": 3,
        "val_every": 3,
        "checkpoint_every": 1,
        "seed": 3,
        "device": "cpu",
    }
    cfg.update(kw)
    return cfg


def write_config(path: Path, cfg: dict[str, object]) -> Path:
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="session")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_volumes(tmp_path_factory.mktemp("vols"))


@pytest.fixture(scope="session")
def tconfig(volumes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("cfg") / "train.json", train_config(volumes))


@pytest.fixture(scope="session")
def trained(tconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-iteration model trained through the CLI; returns its run folder."""
    import torch

    run = tmp_path_factory.mktemp("runs") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses of the fault tests run, so that weights compare equal
    try:
        assert main(["texture", "train", "--out", str(run), "--config", str(tconfig)]) == 0
    finally:
        torch.set_num_threads(threads)
    return run


def refused(cli, args, roots, *names: str) -> str:
    """Run a command that must be refused: exit 2, one line naming each of ``names``, nothing changed."""
    before = snapshot(*roots)
    rc, err = cli(*args)
    line = one_line(err)
    assert rc == 2, err
    for n in names:
        assert n in line, line
    assert snapshot(*roots) == before, "something was written, moved or deleted"
    return line


def finished_tiny_study(cli, volumes: Path, tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """A one-model, one-corruption ``texture study`` run to the end: (config, folder, results)."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: folder, path: {volumes}, label_set: tissue4}}\n"
        "train: {iterations: 1, channels: [4, 8], patch_size: [16, 16, 16], num_res_units: 0, device: cpu}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\nreport: {bootstrap: 5}\n"
    )
    out = tmp_path / "st"
    rc, err = cli("texture", "study", cfg, "--out", out)
    assert rc == 0, err
    return cfg, out, pd.read_parquet(out / "results.parquet")
