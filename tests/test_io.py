"""Atomic output helpers leave nothing half-written behind."""

from __future__ import annotations

import json

import pytest
import torch

from medaudit.errors import InputError
from medaudit.io import atomic_output_dir, atomic_save, atomic_write_json, atomic_write_text


def test_atomic_write_text_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "x.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["x.txt"]


def test_atomic_write_json_numpy(tmp_path):
    import numpy as np

    p = atomic_write_json(tmp_path / "x.json", {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(2)})
    assert json.loads(p.read_text()) == {"a": 3, "b": 0.5, "c": [0, 1]}


def test_atomic_save_failure_keeps_old_file(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_save(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["m.bin"]


def test_atomic_output_dir_success_and_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as stage:
        (stage / "f.txt").write_text("ok")
        assert not out.exists()
    assert (out / "f.txt").read_text() == "ok"
    with pytest.raises(ValueError), atomic_output_dir(out) as stage:
        (stage / "g.txt").write_text("partial")
        raise ValueError("boom")
    # the previous complete output survives; no staging folder is left behind
    assert sorted(x.name for x in out.iterdir()) == [".medaudit-output", "f.txt"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]

    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError), atomic_output_dir(fresh):
        raise ValueError("boom")
    assert not fresh.exists()


def test_input_error_is_one_line():
    e = InputError("table.csv: column 'prob'\n row 3 is NaN")
    assert "\n" not in str(e)
    assert str(e) == "table.csv: column 'prob' row 3 is NaN"


def test_assets_are_found_without_importing():
    import subprocess
    import sys

    from medaudit.data import assets

    p = assets.openi_reports_tgz()
    assert p.name == "NLMCXR_reports.tgz" and p.stat().st_size > 100_000
    # locating an asset must not import the (heavy) package that ships it
    code = "import sys; from medaudit.data import assets; assets.lung_masks_zip(); print('torchxrayvision' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
    with pytest.raises(InputError, match="not installed"):
        assets.package_dir("no_such_package_medaudit")


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "r.html", "x")
        with atomic_save(tmp_path / "m.pt") as tmp:
            tmp.write_bytes(b"1")
        with atomic_output_dir(tmp_path / "out") as stage:
            (stage / "a").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_check_device_names_the_flag():
    from medaudit.device import check_device

    assert check_device(None) is None and check_device("auto") is None
    assert check_device("CPU") == "cpu"
    for bad in ("tpu:7", "bogus", "cuda:99" if torch.cuda.is_available() else "cuda"):
        with pytest.raises(InputError, match=r"^--device '"):
            check_device(bad)


def test_config_file_error_names_the_file_once(tmp_path):
    from medaudit.configfile import read_config
    from medaudit.texture.train import TrainConfig

    p = tmp_path / "c.json"
    p.write_text('{"lr": -1}')
    with pytest.raises(InputError) as e:
        read_config(p, TrainConfig)
    assert str(e.value) == f"{p}: key 'lr': Input should be greater than 0 (got -1)"


def test_every_config_refuses_non_finite_numbers():
    from medaudit.configfile import Config
    from medaudit.studies.texture_robustness.config import ResourcesModel

    class C(Config):
        x: float = 1.0

    with pytest.raises(InputError, match=r"C: key 'x': Input should be a finite number"):
        C(x=float("nan"))
    with pytest.raises(ValueError, match="finite number"):
        ResourcesModel(cpus_per_task=float("inf"))


def test_missing_reason_tells_what_is_there(tmp_path):
    from medaudit.io import missing_reason

    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "gone.csv")
    (tmp_path / "dir").mkdir()
    (tmp_path / "f.txt").write_text("x")
    assert "symlink loop" in missing_reason(loop, "table file")
    assert "broken symbolic link" in missing_reason(broken, "table file")
    assert "gone.csv" in missing_reason(broken)
    assert missing_reason(tmp_path / "nope.csv", "table file") == "table file not found"
    assert missing_reason(tmp_path / "dir", "config file") == "is a folder, not a config file"
    assert missing_reason(tmp_path / "f.txt", "NIfTI folder") == "is a file, not a NIfTI folder"
    assert "not a regular file" in missing_reason("/dev/null", "config file")
