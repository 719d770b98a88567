"""Twelfth sweep (texture faults and resume): the cached ``mni-phantom`` cohort shared, damaged or out of
reach, and a study whose failures did not print on one line.

The cohort is built here from a tiny synthetic template (``_mni_tissue_labels`` patched), so each case
takes a second or two; the code under test (locking, caching, checking, publishing) is the real one.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.cli import main
from medaudit.data import mni_phantom

from .conftest import finished_tiny_study, one_line, snapshot, train_config, write_config

pytestmark = pytest.mark.filterwarnings("ignore:The maximum displacement:RuntimeWarning")  # tiny template


def _tiny_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 24^3 'brain' at 1 mm: a ball of WM in GM in CSF, and an image that follows the labels."""
    zz, yy, xx = np.meshgrid(*[np.arange(24)] * 3, indexing="ij")
    r = np.sqrt((zz - 12.0) ** 2 + (yy - 12.0) ** 2 + (xx - 12.0) ** 2)
    labels = np.select([r < 5, r < 8, r < 10], [3, 2, 1], 0).astype(np.int64)
    t1 = np.choose(labels, [0.0, 0.3, 0.6, 0.9]).astype(np.float32)
    return t1, labels, np.eye(4)


@pytest.fixture
def tiny_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mni_phantom, "_mni_tissue_labels", _tiny_template)


def _build(cache: Path) -> list[mni_phantom.VolumeCase]:
    return mni_phantom.build_mni_phantom(cache, n_subjects=2, spacing=4.0)


def test_two_runs_building_one_cohort_cache_share_it(tiny_template, monkeypatch, tmp_path):
    """Two runs (two studies, or two training tasks of one study with ``--workers 2``) that shared a cache
    and built the cohort at the same moment: the second failed with 'cohort cache folder ...: another
    medaudit run is writing it' (a failed training task, exit 1). It now waits for the first and
    reuses the cohort it built."""
    started = threading.Event()

    def slow_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        started.set()
        time.sleep(1.0)  # the first build is under way while the second one starts
        return _tiny_template()

    monkeypatch.setattr(mni_phantom, "_mni_tissue_labels", slow_template)
    results: dict[str, object] = {}

    def build(name: str) -> None:
        try:
            results[name] = _build(tmp_path / "cache")
        except Exception as exc:  # recorded for the assertion below
            results[name] = exc

    first = threading.Thread(target=build, args=("first",))
    first.start()
    assert started.wait(30)
    build("second")
    first.join()
    assert not isinstance(results["second"], Exception), results["second"]
    assert not isinstance(results["first"], Exception), results["first"]
    assert results["first"] == results["second"]
    (folder,) = (tmp_path / "cache").iterdir()  # the cohort, and no lock file left behind
    assert folder.name.startswith("mni-phantom-n2")


def test_a_damaged_file_of_the_cached_cohort_is_built_again(tiny_template, tmp_path):
    """A cached cohort whose manifest was whole but one file truncated (a disk full, a copy cut short)
    counted as cached: every training read the truncated file and failed ('unreadable NIfTI data', exit
    1), on every rerun. The manifest now keeps each file's SHA-256; a file that differs makes the cohort
    be built again (the same, deterministic files), with a warning naming it."""
    cases = _build(tmp_path / "cache")
    image = cases[1].image
    good = image.read_bytes()
    image.write_bytes(good[:200])
    with pytest.warns(
        UserWarning, match="phantom-001_image.nii.gz: the cached cohort file is missing or damaged"
    ):
        again = _build(tmp_path / "cache")
    assert again == cases
    assert image.read_bytes() == good
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound cache is reused without a word
        assert _build(tmp_path / "cache") == cases


def test_a_study_whose_cohort_cache_cannot_be_made_is_refused_before_its_folder(cli, tmp_path):
    """``data: {source: mni-phantom, cache_dir: FILE/sub}``: the cohort is built by the first training
    task, so the study made its folder, failed every task (exit 1; the message wrapped over three lines)
    and left the folder with its study.json. The cohort is now built (or its cache checked) before the
    folder is claimed: one line naming the config's ``data`` key and the cache, exit 2."""
    (tmp_path / "afile").write_text("not a folder")
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: mni-phantom, n_subjects: 2, phantom_spacing: 7.0, cache_dir: {tmp_path}/afile/sub}}\n"
        "train: {iterations: 1, channels: [4, 8], patch_size: [16, 16, 16], num_res_units: 0, device: cpu}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    before = snapshot(tmp_path)
    rc, err = cli("texture", "study", cfg, "--out", tmp_path / "st")
    line = one_line(err)
    assert rc == 2, err
    assert line.startswith(f"error: {cfg}: key 'data': cohort cache folder {tmp_path}/afile/sub/"), line
    assert "afile is a file, not a folder" in line, line
    assert snapshot(tmp_path) == before


def test_a_failed_study_task_is_listed_on_one_line(volumes, tmp_path, capsys):
    """The summary after a study with failed tasks printed each failure through rich at the terminal's
    width (80 columns in a pipe or a log), so a long message ran over several lines. Each is now one."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: folder, path: {volumes}, label_set: tissue4, test_fraction: 0.0}}\n"
        "train: {iterations: 1, channels: [4, 8], patch_size: [16, 16, 16], num_res_units: 0, device: cpu}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    capsys.readouterr()
    rc = main(["texture", "study", str(cfg), "--out", str(tmp_path / "st")])
    out = capsys.readouterr().out
    assert rc == 1
    summary = [ln for ln in out.splitlines() if ln.startswith("failed ") and "InputError" in ln]
    assert summary, out
    assert all("raise data.test_fraction" in ln for ln in summary), out  # the message's end, on that line


def test_a_study_restarts_a_training_whose_checkpoint_is_damaged(cli, volumes, tmp_path, recwarn):
    """An unfinished training of a study whose ``checkpoint.pt`` cannot be loaded (it is written
    atomically, so a disk fault) failed on every rerun: 'a damaged checkpoint ...; delete it to start the
    run over' (exit 1), a file deep inside the study's own folder. It is now kept as
    ``checkpoint.pt.unreadable-1`` and the training starts over: the same results as before."""
    cfg, out, before = finished_tiny_study(cli, volumes, tmp_path)
    (tdir,) = (out / "train").iterdir()
    for name in ("done.json", "model.pt", "history.json"):  # as a run killed before it finished
        (tdir / name).unlink()
    for part in (out / "parts").glob("*.parquet"):
        part.unlink()
    (tdir / "checkpoint.pt").write_bytes((tdir / "checkpoint.pt").read_bytes()[:700])
    rc, err = cli("texture", "study", cfg, "--out", out)
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), before)
    assert (tdir / "checkpoint.pt.unreadable-1").stat().st_size == 700
    assert any("checkpoint.pt: damaged; the training starts over" in str(w.message) for w in recwarn)


def test_a_training_resumed_after_its_data_changed_starts_over(cli, volumes, tmp_path, monkeypatch):
    """``texture train`` interrupted, a scan of the data then changed on disk (re-exported, corrected),
    and the same command run again: the run resumed from its checkpoint without a word, so the model was
    trained partly on the old scan, partly on the new one, unlike any uninterrupted run. Checkpoints now
    keep a key of the volumes trained on; other data start the run over, with a warning naming the
    folder, and the model equals an uninterrupted run on the new data."""
    import shutil

    import nibabel as nib
    import torch

    data = tmp_path / "vols"
    shutil.copytree(volumes, data)
    cfg = write_config(tmp_path / "t.json", train_config(data, iterations=2))
    run = tmp_path / "run"
    monkeypatch.setenv("MEDAUDIT_FAULT", "train:checkpoint@INT")  # Ctrl-C after the first checkpoint
    rc, err = cli("texture", "train", "--config", cfg, "--out", run)
    assert rc == 130 and (run / "checkpoint.pt").is_file(), err
    for name in ("s0", "s1", "s2", "s3", "s4"):  # every case changes: whichever lands in training
        p = data / "images" / f"{name}.nii.gz"
        img = nib.load(p)
        nib.save(nib.Nifti1Image(img.get_fdata().astype(np.float32) * 0.5 + 0.2, img.affine), p)
    with pytest.warns(UserWarning, match="holds an interrupted run whose data have changed since") as w:
        rc, err = cli("texture", "train", "--config", cfg, "--out", run)
    assert rc == 0, err
    assert any(str(x.message).startswith(f"{run}: ") for x in w)
    rc, err = cli("texture", "train", "--config", cfg, "--out", tmp_path / "fresh")
    assert rc == 0, err
    a = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "fresh" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_study_rewrites_the_split_of_a_finished_training(cli, volumes, tmp_path, recwarn, damage):
    """A finished training whose ``split.json`` (the test cases its evaluations read) was deleted or
    truncated counted as done, so its evaluation failed on every rerun, exit 1, with a bare
    'FileNotFoundError: ...' or 'JSONDecodeError: Unterminated string ...' that named no file. The
    training task now runs again and writes the split again from the data (the same split; a damaged
    file is kept as ``split.json.unreadable-1``): the same results."""
    cfg, out, before = finished_tiny_study(cli, volumes, tmp_path)
    (split,) = (out / "train").glob("*/split.json")
    good = split.read_bytes()
    if damage == "missing":
        split.unlink()
    else:
        split.write_bytes(good[:50])
    for part in (out / "parts").glob("*.parquet"):
        part.unlink()
    rc, err = cli("texture", "study", cfg, "--out", out)
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), before)
    assert split.read_bytes() == good
    assert (split.parent / "split.json.unreadable-1").exists() == (damage == "truncated")


def _task_or_die(payload: dict[str, object]) -> str:
    """A grid task that kills its own worker process (as the OOM killer or ``kill -9`` would)."""
    import os
    import signal

    if payload["name"] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return str(payload["name"])


def test_a_killed_pool_worker_fails_its_tasks_and_the_grid_goes_on():
    """``texture study --workers 2`` (or ``bench-scenarios``) whose worker process was killed (the OOM
    killer, ``kill -9``): the tasks in flight failed with ``BrokenProcessPool`` and the next submission
    raised it, so the study ended in 'internal error: BrokenProcessPool ...' (exit 1) without running
    the tasks left or writing its results. The tasks in flight now fail with one line saying what
    happened and how to resume; the others run in a new pool."""
    from medaudit.rungrid import PoolBackend, Task, run_grid

    tasks = [Task("t", name, {"name": name}) for name in ("die", "a", "b")]
    done: list[str] = []
    run = run_grid(
        tasks,
        _task_or_die,
        lambda t: {"name": t.key},
        lambda t, result: done.append(result),
        is_done=lambda t: False,
        backend=PoolBackend(1),  # one slot: "die" is alone in flight, the others come after
    )
    assert "worker process ended abruptly" in run.failed["die"]
    assert "rerun the same command to resume" in run.failed["die"]
    assert done == ["a", "b"] and run.executed == ["a", "b"]  # submitted after the pool broke
    assert list(run.failed) == ["die"]


def _task_disk_full(payload: dict[str, object]) -> str:
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", f"/runs/{payload['name']}/checkpoint.pt")


def test_a_full_disk_stops_the_grid_naming_the_file():
    """A study task that hit a full disk was recorded as one failed task and the study went on to fail
    every other task the same way, ending with exit 1 and 'failed ...: OSError: [Errno 28] ...' lines.
    A full disk now stops the grid with that error, so the command prints one line naming the file,
    exit 2, as every other command does; the tasks left are not started."""
    from medaudit.rungrid import Task, run_grid

    started: list[str] = []

    def fn(payload: dict[str, object]) -> str:
        started.append(str(payload["name"]))
        return _task_disk_full(payload)

    tasks = [Task("t", name, {"name": name}) for name in ("a", "b")]
    with pytest.raises(OSError, match="No space left on device") as info:
        run_grid(tasks, fn, lambda t: {"name": t.key}, lambda t, r: None, is_done=lambda t: False)
    assert info.value.filename == "/runs/a/checkpoint.pt"
    assert started == ["a"]


def test_a_study_on_a_full_disk_is_one_line_naming_the_file(cli, volumes, tmp_path, monkeypatch):
    """The same through ``texture study``: one line naming the checkpoint, exit 2."""
    import errno

    from medaudit import io
    from medaudit.texture import train as train_module

    def full(path: Path, obj: object) -> None:
        with io.atomic_save(path):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module, "save_checkpoint", full)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"data: {{source: folder, path: {volumes}, label_set: tissue4}}\n"
        "train: {iterations: 1, channels: [4, 8], patch_size: [16, 16, 16], num_res_units: 0, device: cpu}\n"
        "train_filters: [none]\ntest: {corruptions: [gaussian_noise], severities: [1]}\n"
    )
    rc, err = cli("texture", "study", cfg, "--out", tmp_path / "st")
    assert rc == 2, err
    line = one_line(err)
    assert line.startswith(f"error: {tmp_path / 'st' / 'train'}/") and line.endswith(
        "/checkpoint.pt: No space left on device"
    ), line
