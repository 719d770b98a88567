"""A damaged training checkpoint in a run folder: resuming fails with one line naming the file and exit 2
(never an internal error or a traceback), and the checkpoint is left as it was (config.json, split.json
and the marker are rewritten with the same content, as on any resume)."""

from __future__ import annotations

import pytest
import torch

from .conftest import one_line, snapshot


def _drop_optimizer(st: dict) -> None:
    st.pop("optimizer")


def _wrong_shape(st: dict) -> None:
    st["model"][next(iter(st["model"]))] = torch.zeros(3)


def _bad_iteration(st: dict) -> None:
    st["iteration"] = "x"


def _bad_rng(st: dict) -> None:
    st["rng"] = {"torch": torch.zeros(2)}


@pytest.mark.parametrize("damage", [_drop_optimizer, _wrong_shape, _bad_iteration, _bad_rng])
def test_inconsistent_checkpoint_is_one_line_naming_it(cli, tconfig, tmp_path, damage, monkeypatch):
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoint.pt"
    monkeypatch.setenv("MEDAUDIT_FAULT", "train:checkpoint@INT")  # Ctrl-C after the first checkpoint
    assert cli("texture", "train", "-o", run, "--config", tconfig)[0] == 130
    st = torch.load(ckpt, weights_only=True)
    damage(st)
    torch.save(st, ckpt)
    before = snapshot(run)[str(ckpt)], ckpt.read_bytes()
    rc, err = cli("texture", "train", "-o", run, "--config", tconfig)
    line = one_line(err)
    assert rc == 2, err
    assert str(ckpt) in line and "damaged checkpoint" in line and "Traceback" not in err
    assert (snapshot(run)[str(ckpt)], ckpt.read_bytes()) == before  # the checkpoint is kept as it was


@pytest.mark.parametrize("keep", [0, 100, -1])
def test_corrupt_checkpoint_is_named_damaged_with_how_to_start_over(
    cli, tconfig, tmp_path, keep, monkeypatch
):
    """A truncated or garbled checkpoint.pt said 'not a medaudit model, or unsafe to load' (it is the
    run's own file): it is a damaged checkpoint, to delete to start over."""
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoint.pt"
    monkeypatch.setenv("MEDAUDIT_FAULT", "train:checkpoint@INT")
    assert cli("texture", "train", "-o", run, "--config", tconfig)[0] == 130
    data = ckpt.read_bytes()
    ckpt.write_bytes(b"garbage" * 40 if keep < 0 else data[: keep or len(data) // 2])
    before = snapshot(run)[str(ckpt)], ckpt.read_bytes()
    rc, err = cli("texture", "train", "-o", run, "--config", tconfig)
    line = one_line(err)
    assert rc == 2, err
    assert str(ckpt) in line and "damaged checkpoint" in line and "delete it" in line, line
    assert "not a medaudit model" not in line
    assert (snapshot(run)[str(ckpt)], ckpt.read_bytes()) == before
