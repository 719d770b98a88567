"""The study runner: config validation, content keys, resume, atomic results table, Ray, report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medaudit import rungrid as rg
from medaudit.errors import InputError
from medaudit.studies.texture_robustness import study as st

TRAIN_FILTER = "gaussian_blur"  # a training filter (family 'blur')
TEST_CORRUPTIONS = ["gaussian_noise", "gaussian_blur"]  # one unseen family, one seen


def tiny_raw(cache_dir: Path) -> dict:
    """A study small enough to train and evaluate in seconds (tiny phantom, 3 iterations)."""
    return {
        "name": "tiny",
        "data": {
            "source": "mni-phantom",
            "n_subjects": 3,
            "phantom_spacing": 7.0,
            "val_fraction": 0.0,
            "test_fraction": 0.34,
            "cache_dir": str(cache_dir),
        },
        "train": {
            "channels": [4, 8],
            "num_res_units": 0,
            "patch_size": [16, 16, 16],
            "batch_size": 1,
            "iterations": 3,
            "checkpoint_every": 3,
            "val_every": 1000,
        },
        "train_filters": [{"name": TRAIN_FILTER, "severities": [3]}],
        "seeds": [0],
        "test": {"corruptions": TEST_CORRUPTIONS, "severities": [1, 5], "seed": 0},
        "report": {"bootstrap": 50},
    }


@pytest.fixture(scope="module")
def cache_dir(pytestconfig, tmp_path_factory) -> Path:
    """The phantom cohort is content-keyed and written atomically: reuse it across test runs
    (through pytest's cache when the cache plugin is on, else a fresh temporary folder)."""
    cache = getattr(pytestconfig, "cache", None)
    if cache is None:
        return tmp_path_factory.mktemp("medaudit-phantom")
    return Path(cache.mkdir("medaudit-phantom"))


def write_cfg(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


# --------------------------------------------------------------------------------------------------
# config validation


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda r: r.pop("data"), "data"),
        (lambda r: r.update(extra=1), "extra"),
        (lambda r: r["data"].update(source="pacs"), "data.source"),
        (lambda r: r["data"].update(source="dhcp"), "data.path"),
        (lambda r: r["data"].update(source="dhcp", path="/CHANGE_ME/dhcp"), "data.path"),
        (lambda r: r["train"].update(learning_rate=1.0), "train.learning_rate"),
        (lambda r: r["train"].update(seed=3), "train.seed"),
        (lambda r: r["train"].update(n_subjects=3), "train.n_subjects"),
        (lambda r: r["train_filters"][0].update(severities=[7]), "train_filters[0].severities"),
        (lambda r: r["train_filters"][0].update(name="sharpen_everything"), "train_filters[0].name"),
        (lambda r: r["train_filters"][0].pop("severities"), "train_filters[0].severities"),
        (lambda r: r["test"].update(corruptions=["no_such_noise"]), "test.corruptions"),
        (lambda r: r["test"].update(severities=[0, 1]), "test.severities"),
        (lambda r: r.update(seeds="zero"), "seeds"),
        (lambda r: r["train"].update(patch_size=[16, 16]), "train"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, cache_dir, mutate, key):
    raw = tiny_raw(cache_dir)
    mutate(raw)
    path = write_cfg(tmp_path / "bad.yaml", raw)
    with pytest.raises(InputError) as exc:
        st.load_config(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert f"'{key}'" in msg
    assert "\n" not in msg


def test_config_not_yaml_or_missing(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        st.load_config(bad)
    with pytest.raises(InputError, match="not found"):
        st.load_config(tmp_path / "nope.yaml")


def test_baseline_always_included(cache_dir):
    cfg = st.parse_config(tiny_raw(cache_dir), "t.yaml")
    assert [f.name for f in cfg.train_filters] == ["none", TRAIN_FILTER]


def test_shipped_configs_validate():
    small = st.load_config("study_small")
    assert small.data.source == "mni-phantom"
    full_raw = yaml.safe_load((Path(st.__file__).parent / "configs" / "study_full.yaml").read_text())
    assert full_raw["data"]["source"] == "dhcp"
    with pytest.raises(InputError, match=r"data\.path"):  # the placeholder must be set by the user
        st.load_config("study_full")
    full_raw["data"]["path"] = "/data/dhcp"
    full = st.parse_config(full_raw, "study_full.yaml")
    filters = [f for f in full.train_filters if f.name != "none"]
    assert len(filters) >= 8 and all(2 <= len(f.severities) <= 3 for f in filters)
    assert len(full.test_corruptions) >= 10 and full.test_severities == (1, 2, 3, 4, 5)
    assert len(full.seeds) >= 3
    n_train = sum(t.kind == "train" for t in st.build_tasks(full))
    assert n_train == len(full.seeds) * (1 + sum(len(f.severities) for f in filters))
    # issue 12's evidence: 8 models x 3 seeds; leave-one-family-out: baseline and 3 left-out families
    recipes, lofo = st.load_config("study_recipes"), st.load_config("study_lofo")
    assert sum(t.kind == "train" for t in st.build_tasks(recipes)) == 24 and len(recipes.seeds) == 3
    assert sum(t.kind == "train" for t in st.build_tasks(lofo)) == 4


def test_study_recipes_v2_trains_like_with_like():
    """The second evidence round: every row (baseline, filtered copies, recipes) shares one training
    setup (1500 iterations, z-scored input), the test grid of study_recipes, and no recipe pool holds a
    held-out test family."""
    from medaudit.texture.filters import family_of
    from medaudit.texture.recipes import make_recipe

    v1, v2 = st.load_config("study_recipes"), st.load_config("study_recipes_v2")
    assert v2.train["input_norm"] == "zscore" and v2.train["iterations"] == 1500
    assert (v2.test_corruptions, v2.test_severities) == (v1.test_corruptions, v1.test_severities)
    assert [f.name for f in v2.train_filters] == [f.name for f in v1.train_filters]
    tasks = [t for t in st.build_tasks(v2) if t.kind == "train"]
    assert len(tasks) == 3 * (4 + len(v2.recipes)) and len(v2.seeds) == 3
    assert {t.spec["train"]["input_norm"] for t in tasks} == {"zscore"}
    held_out = {family_of(c) for c in ("motion", "ghosting", "gibbs", "spike", "low_resolution")}
    for r in v2.recipes:
        assert not held_out & set(make_recipe(r.name, r.options).train_families()), r.label
    lofo = st.load_config("study_lofo_v2")
    assert lofo.train == v2.train and [r.left_out for r in lofo.recipes] == ["motion", "kspace", "resolution"]
    for r in lofo.recipes:  # leaves out F and only F
        assert held_out - {r.left_out} <= set(make_recipe(r.name, r.options).train_families()), r.label


# --------------------------------------------------------------------------------------------------
# task keys


def test_task_keys_stable_and_content_sensitive(cache_dir):
    raw = tiny_raw(cache_dir)
    a = st.build_tasks(st.parse_config(raw, "a.yaml"))
    b = st.build_tasks(st.parse_config(copy.deepcopy(raw), "elsewhere/b.yaml"))
    assert [t.key for t in a] == [t.key for t in b]  # same content, same keys (file name irrelevant)
    assert len({t.key for t in a}) == len(a)
    assert all(len(t.key) == 64 for t in a)
    n_train = sum(t.kind == "train" for t in a)
    assert n_train == 2 and len(a) == 4

    # a training setting changes every key (evaluations depend on the training key)
    raw2 = copy.deepcopy(raw)
    raw2["train"]["iterations"] = 4
    c = st.build_tasks(st.parse_config(raw2, "a.yaml"))
    assert not {t.key for t in a} & {t.key for t in c}

    # a test setting changes only the evaluation keys
    raw3 = copy.deepcopy(raw)
    raw3["test"]["severities"] = [1, 2]
    d = st.build_tasks(st.parse_config(raw3, "a.yaml"))
    assert [t.key for t in a if t.kind == "train"] == [t.key for t in d if t.kind == "train"]
    assert not {t.key for t in a if t.kind == "eval"} & {t.key for t in d if t.kind == "eval"}

    # an added seed adds tasks and keeps the old ones
    raw4 = copy.deepcopy(raw)
    raw4["seeds"] = [0, 1]
    e = st.build_tasks(st.parse_config(raw4, "a.yaml"))
    assert {t.key for t in a} < {t.key for t in e}

    # the texture code the tasks run is part of the key
    fp = rg.code_fingerprint(*st.TEXTURE_CODE)
    assert st.study_task_key("train", {"a": 1}) == rg.task_key("train", {"a": 1}, code=fp)


# --------------------------------------------------------------------------------------------------
# results table


# --------------------------------------------------------------------------------------------------
# a real tiny study


class Counter:
    """Wraps the real executor and records what it runs (pickled copies count in the driver only)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, payload):
        self.calls.append((payload["kind"], payload["key"]))
        return st.execute_task(payload)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("study")
    cfg = st.parse_config(tiny_raw(cache_dir), "tiny.yaml")
    counter = Counter()
    run = st.run_study(cfg, out, executor=counter)
    return cfg, out, run, counter


def test_tiny_study_runs_and_writes_one_table(tiny_run):
    _cfg, out, run, counter = tiny_run
    assert not run.failed, run.failed
    assert [k for k, _ in counter.calls] == ["train", "eval", "train", "eval"]
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["train_filter"]) == {"none", TRAIN_FILTER}
    assert set(df["corruption"]) == {"none", *TEST_CORRUPTIONS}
    assert set(df.loc[df["corruption"] != "none", "severity"]) == {1, 5}
    assert df["dice"].between(0, 1).all()
    # one part per evaluation task, and the table is exactly their union
    parts = sorted((out / "parts").glob("*.parquet"))
    assert len(parts) == 2
    assert len(df) == sum(len(pd.read_parquet(p)) for p in parts)
    meta = json.loads((out / "study.json").read_text())
    assert [t["key"] for t in meta["tasks"]] == [t.key for t in run.tasks]


def test_rerun_skips_finished_tasks(tiny_run):
    cfg, out, run, _ = tiny_run
    before = pd.read_parquet(out / "results.parquet")
    again = Counter()
    run2 = st.run_study(cfg, out, executor=again, report=False)
    assert again.calls == [] and len(run2.skipped) == 4
    # lose one evaluation: exactly that one runs again, and the table is the same
    ev = next(t for t in run.tasks if t.kind == "eval")
    (out / "parts" / f"{ev.key}.parquet").unlink()
    third = Counter()
    st.run_study(cfg, out, executor=third, report=False)
    assert third.calls == [("eval", ev.key)]
    after = pd.read_parquet(out / "results.parquet")
    cols = ["train_filter", "corruption", "severity", "case", "class"]
    pd.testing.assert_frame_equal(
        before.sort_values(cols).reset_index(drop=True)[[*cols, "dice"]],
        after.sort_values(cols).reset_index(drop=True)[[*cols, "dice"]],
    )


def test_report_renders_and_escapes(tiny_run, tmp_path):
    from medaudit.studies.texture_robustness.report import main_tables, write_study_report

    cfg, out, _run, _ = tiny_run
    html = (out / "report.html").read_text()
    for section in (
        "Train &times; test",
        "unseen corruption families",
        "Clean-accuracy cost",
        "Seen families",
        "Texture bias",
    ):
        assert section in html
    bias = pd.read_csv(out / "texture_bias.csv")
    assert set(bias["row"]) == {"none", f"{TRAIN_FILTER}@3"}
    assert bias["texture_bias"].dropna().between(0, 1).all()
    assert html.count("data:image/png;base64,") >= 2
    tables = main_tables(pd.read_parquet(out / "results.parquet"), n_boot=20)
    rank = tables["ranking"]
    assert set(rank["model"]) == {"none", f"{TRAIN_FILTER}@3"}
    ce = tables["ce"]
    assert (ce.loc[ce["train_filter"] == "none", "ce"].round(9) == 1.0).all()  # baseline vs itself
    seen = ce[ce["train_filter"] == TRAIN_FILTER].set_index("corruption")["seen"]
    assert seen["gaussian_blur"] and not seen["gaussian_noise"]
    evil = st.parse_config(
        {**tiny_raw(Path(cfg.data.settings["cache_dir"])), "name": "<script>x</script>"}, "e.yaml"
    )
    p = write_study_report(pd.read_parquet(out / "results.parquet"), evil, tmp_path / "r.html")
    text = p.read_text()
    assert "<script>x" not in text and "&lt;script&gt;x" in text


def test_ray_runs_a_tiny_study(tmp_path, cache_dir, tiny_run):
    pytest.importorskip("ray")
    _, serial_out, _, _ = tiny_run
    raw = tiny_raw(cache_dir)
    raw["train_filters"] = [{"name": "none"}]  # the baseline alone: one training, one evaluation
    cfg = st.parse_config(raw, "tiny.yaml")
    run = st.run_study(cfg, tmp_path / "ray", ray_address="local", workers=1, report=False)
    assert not run.failed, run.failed
    assert len(run.executed) == 2
    a = pd.read_parquet(serial_out / "results.parquet").query("train_filter == 'none'")
    b = pd.read_parquet(tmp_path / "ray" / "results.parquet")
    cols = ["train_filter", "corruption", "severity", "case", "class"]
    a = a.sort_values(cols).reset_index(drop=True)
    b = b.sort_values(cols).reset_index(drop=True)
    assert len(a) == len(b)
    pd.testing.assert_series_equal(a["dice"], b["dice"], atol=1e-4)


def test_dry_run_lists_tasks_and_keys(tmp_path, cache_dir, capsys):
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command("study")(st.study_command)
    app.command("noop")(lambda: None)
    cfg = write_cfg(tmp_path / "tiny.yaml", tiny_raw(cache_dir))
    res = CliRunner().invoke(app, ["study", str(cfg), "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.output
    keys = [t.key[:16] for t in st.build_tasks(st.load_config(cfg))]
    assert all(k in res.output for k in keys)
    assert "pending" in res.output
    assert not (tmp_path / "o" / "results.parquet").exists()


def _synthetic_results() -> pd.DataFrame:
    """A hand-made long table with known answers (2 models x 2 seeds)."""
    dice = {  # (filter, corruption, severity) -> Dice; seed 1 adds 0.02 everywhere
        ("none", "none", 0): 0.90,
        ("none", "gaussian_noise", 1): 0.80,
        ("none", "gaussian_noise", 5): 0.60,
        ("none", "gaussian_blur", 1): 0.85,
        ("none", "gaussian_blur", 5): 0.55,
        (TRAIN_FILTER, "none", 0): 0.85,
        (TRAIN_FILTER, "gaussian_noise", 1): 0.90,
        (TRAIN_FILTER, "gaussian_noise", 5): 0.80,
        (TRAIN_FILTER, "gaussian_blur", 1): 0.85,
        (TRAIN_FILTER, "gaussian_blur", 5): 0.85,
    }
    rows = []
    for (f, c, s), d in dice.items():
        for seed in (0, 1):
            for cls in ("GM", "WM"):
                rows.append(
                    {
                        "train_filter": f,
                        "train_severity": 0 if f == "none" else 3,
                        "seed": seed,
                        "corruption": c,
                        "family": {"none": "clean", "gaussian_noise": "noise", "gaussian_blur": "blur"}[c],
                        "severity": s,
                        "case": "c1",
                        "class": cls,
                        "dice": d + 0.02 * seed,
                        "hd95": 1.0,
                    }
                )
    return pd.DataFrame(rows)


def test_report_numbers_on_a_known_table(tmp_path):
    from medaudit.studies.texture_robustness.report import main_tables, write_study_report

    t = main_tables(_synthetic_results(), n_boot=200)
    ce = t["ce"].set_index(["train_filter", "seed", "corruption"])
    assert ce.loc[(TRAIN_FILTER, 0, "gaussian_noise"), "ce"] == pytest.approx((0.1 + 0.2) / (0.2 + 0.4))
    assert ce.loc[(TRAIN_FILTER, 1, "gaussian_noise"), "ce"] == pytest.approx((0.08 + 0.18) / (0.18 + 0.38))
    assert bool(ce.loc[(TRAIN_FILTER, 0, "gaussian_blur"), "seen"])
    cost = t["clean_cost"].set_index("model")
    assert cost.loc[f"{TRAIN_FILTER}@3", "delta"] == pytest.approx(-0.05)
    gain = t["gain"].set_index("model")
    assert gain.loc[f"{TRAIN_FILTER}@3", "unseen_delta"] == pytest.approx(0.15)  # noise only
    assert gain.loc[f"{TRAIN_FILTER}@3", "seen_delta"] == pytest.approx(0.15)  # blur only
    rank = t["ranking"]
    assert list(rank["model"]) == [f"{TRAIN_FILTER}@3", "none"]
    fam = t["families"]
    row = fam[(fam["model"] == f"{TRAIN_FILTER}@3") & (fam["family"] == "noise")].iloc[0]
    assert row["ce_lo"] <= row["ce"] <= row["ce_hi"] and row["ce_hi"] - row["ce_lo"] > 0  # 2 seeds: a real CI
    # a baseline-only table (a partly finished study) still renders
    only_base = _synthetic_results().query("train_filter == 'none'")
    cfg = st.parse_config(tiny_raw(tmp_path), "t.yaml")
    html = write_study_report(only_base, cfg, tmp_path / "r.html").read_text()
    assert "Robustness ranking" in html
