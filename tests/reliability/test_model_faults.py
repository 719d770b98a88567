"""Model and weight files that ``torch.load(weights_only=True)`` refuses (a pickle that would run code,
random bytes, an empty or truncated file) or that hold something else: one line naming the file (no torch
warning before it, no hint at unsafe loading), exit 2, and no code from the file ever runs."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from medaudit.audit.encoders.image import load_weights_file, load_xrv_checkpoint
from medaudit.errors import InputError
from medaudit.studies.cxr_slices.classifier import CNNClassifier

from .conftest import one_line, refused


class _Runs:
    """Unpickling this would run ``touch`` (weights_only must refuse it)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


class _Custom:
    """A harmless class of our own: weights_only refuses it all the same."""


def _code_pickle(tmp_path: Path) -> Path:
    p = tmp_path / "runs-code.pt"
    p.write_bytes(pickle.dumps(_Runs(tmp_path / "RAN"), protocol=4))
    return p


def test_code_pickle_given_to_predict_is_one_line_and_never_runs(cli, volumes, tmp_path, recwarn):
    model = _code_pickle(tmp_path)
    line = refused(
        cli,
        ["texture", "predict", "--model", model, volumes / "images" / "s0.nii.gz", "--out", tmp_path / "o"],
        [tmp_path],
        str(model),
    )
    assert "unsafe to load" in line and "weights_only=False" not in line
    assert not (tmp_path / "RAN").exists()
    # on the command line a warning is a line of its own on stderr (pytest records it instead)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


@pytest.mark.parametrize("loader", [load_weights_file, load_xrv_checkpoint])
def test_image_weight_loaders_refuse_in_one_line_without_suggesting_unsafe_loading(tmp_path, loader, recwarn):
    bad = tmp_path / "custom.pt"
    torch.save({"w": torch.zeros(1), "obj": _Custom()}, bad)
    for p in (_code_pickle(tmp_path), bad):
        with pytest.raises(InputError) as err:
            loader(p)
        msg = str(err.value)
        assert str(p) in msg and "\n" not in msg and "weights_only=False" not in msg, msg
    assert not (tmp_path / "RAN").exists()
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 50, "list", "truncated", "code"])
def test_saved_classifier_that_cannot_be_loaded_is_named(tmp_path, content):
    folder = tmp_path / "clf"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({}))
    model = folder / "model.pt"
    if content == "list":
        torch.save([1, 2], model)
    elif content == "truncated":
        torch.save({"w": torch.zeros(1000)}, model)
        model.write_bytes(model.read_bytes()[:500])
    elif content == "code":
        model.write_bytes(_code_pickle(tmp_path).read_bytes())
    else:
        model.write_bytes(content)
    with pytest.raises(InputError, match="not a saved classifier, or unsafe to load") as err:
        CNNClassifier.load(folder)
    assert str(model) in one_line(str(err.value))
    assert not (tmp_path / "RAN").exists()
