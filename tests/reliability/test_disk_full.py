"""A full disk (simulated: ENOSPC from write/fsync, or torch.save's RuntimeError on a disk with no space
left): one line naming the file, exit 2, and no partial final file or temporary file left behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import medaudit.io as mio
from medaudit.errors import InputError
from medaudit.io import atomic_save, atomic_write_bytes
from medaudit.outdir import claim_output

from .conftest import make_table, one_line


def _enospc(*_: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")  # as write(2) reports it: no file name


def _free(monkeypatch: pytest.MonkeyPatch, nbytes: int) -> None:
    monkeypatch.setattr(mio.os, "statvfs", lambda p: SimpleNamespace(f_bavail=nbytes // 4096, f_frsize=4096))


def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "slices.json"
    target.write_text("earlier")
    monkeypatch.setattr(mio.os, "fsync", _enospc)
    with pytest.raises(OSError) as err:
        atomic_write_bytes(target, b"new")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert target.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["slices.json"]


def test_torch_save_on_a_full_disk_is_a_disk_full_error(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    _free(monkeypatch, 0)
    with pytest.raises(OSError) as err, atomic_save(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 24896 vs 24788")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_a_writer_error_with_space_left_is_left_as_it_is(tmp_path, monkeypatch):
    _free(monkeypatch, 10 << 30)
    with pytest.raises(RuntimeError, match="a bug"), atomic_save(tmp_path / "model.pt"):
        raise RuntimeError("a bug")
    assert list(tmp_path.iterdir()) == []


def test_a_direct_write_into_the_output_names_the_output(tmp_path):
    out = tmp_path / "ev"
    with pytest.raises(OSError) as err, claim_output(out, "texture-eval") as c:
        (c.stage / "results.csv").write_text("partial")
        _enospc()  # pandas' to_csv says ENOSPC on close, without a file name
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(out)
    assert list(tmp_path.iterdir()) == []


def test_audit_on_a_full_disk_is_one_line_exit_2_and_nothing_left(cli, audit_args, tmp_path, monkeypatch):
    table = make_table(tmp_path / "data")
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").find("slices.json") >= 0:
            _enospc()
        real(fd)

    monkeypatch.setattr(mio.os, "fsync", fsync)
    rc, err = cli(*audit_args(table, tmp_path / "out"))
    line = one_line(err)
    assert rc == 2 and line.startswith("error: ") and "slices.json: No space left on device" in line, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert not [p for p in Path(tmp_path / "data").iterdir() if p.name != "cases.csv"]


def test_memmapped_embeddings_reserve_their_blocks_so_a_full_disk_is_one_error(tmp_path, monkeypatch):
    """``encode_cached(out=...)`` writes a sparse memory-mapped file; without reserving its blocks a
    full disk is a SIGBUS at the first page written. Now: one error naming the file, nothing left."""
    import numpy as np

    import medaudit.audit.encoders.cache as cache
    from medaudit.audit.encoders import encode_cached, get_encoder
    from medaudit.errors import InputError

    texts = [f"report {i} effusion tube" for i in range(8)]
    ids = [f"c{i}" for i in range(8)]
    enc = get_encoder("report", "tfidf-svd", dim=3).fit(texts)
    out = tmp_path / "emb.npy"
    ok = encode_cached(enc, ids, texts, tmp_path / "c", progress=False, out=out)
    assert isinstance(ok, np.memmap) and out.stat().st_blocks * 512 >= out.stat().st_size - 4096
    out.unlink()
    monkeypatch.setattr(cache.os, "posix_fallocate", _enospc, raising=False)
    with pytest.raises(InputError, match=r"emb\.npy: No space left on device \(the embeddings need 0 MiB\)"):
        encode_cached(enc, ids, texts, tmp_path / "c", progress=False, out=out)
    assert not out.exists() and not list(tmp_path.glob(".emb.npy*"))


@pytest.mark.parametrize("in_place", [True, False])
def test_a_disk_full_when_the_output_is_claimed_leaves_nothing(tmp_path, monkeypatch, in_place):
    """The marker write failed after the folder (in place) or the staging folder was made: an empty
    '--out' or '.out.staging-XXXX' was left behind, and the message named the staging marker."""
    monkeypatch.setattr(mio.os, "fsync", _enospc)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err, claim_output(out, "k", in_place=in_place):
        pytest.fail("the run must not start")
    assert str(err.value).startswith(f"--out {out}: cannot write in ")
    assert "No space left on device" in str(err.value) and ".staging-" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
