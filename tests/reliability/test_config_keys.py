"""Config files refuse duplicate keys (YAML and JSON) instead of keeping the last one."""

from __future__ import annotations

from pathlib import Path

import pytest

from medaudit.configfile import load_json_strict, load_yaml_strict, read_mapping
from medaudit.errors import InputError

from .conftest import one_line


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("a.yaml", "lr: 0.001\niterations: 5\nlr: 1\n", r"a\.yaml: duplicate key 'lr' \(line 3\)"),
        ("b.yaml", "train:\n  lr: 0.001\n  lr: 1\n", r"b\.yaml: duplicate key 'lr' \(line 3\)"),
        ("c.json", '{"train": {"lr": 0.001, "lr": 1}}', r"c\.json: duplicate key 'lr'"),
        ("d.yaml", "? [a, b]\n: 1\n", r"d\.yaml: line 1: a mapping key must be plain text"),
    ],
)
def test_read_mapping_refuses_duplicate_keys(tmp_path: Path, name: str, text: str, match: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_mapping(p)


def test_strict_loaders_keep_ordinary_documents() -> None:
    assert load_yaml_strict("a: 1\nb: [1, {c: 2}]\n", "x") == {"a": 1, "b": [1, {"c": 2}]}
    assert load_json_strict('{"a": {"b": 1}, "c": [1, 2]}', "x") == {"a": {"b": 1}, "c": [1, 2]}


def test_study_config_refuses_duplicate_keys(tmp_path: Path) -> None:
    from medaudit.studies.texture_robustness.study import load_config

    p = tmp_path / "s.yaml"
    p.write_text("name: s\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(InputError, match=r"s\.yaml: duplicate key 'seeds' \(line 3\)"):
        load_config(p)


def test_cli_train_config_duplicate_key_exit_2(tmp_path: Path, cli) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("iterations: 5\niterations: 6\n")
    rc, err = cli("texture", "train", "--config", p, "--out", tmp_path / "o")
    assert rc == 2
    assert "duplicate key 'iterations' (line 2)" in one_line(err)
    assert not (tmp_path / "o").exists()
