"""Training recipes: each recipe's defining property, exclusions, reproducibility, resume with a recipe."""

from __future__ import annotations

import pytest
import torch

from medaudit.errors import InputError
from medaudit.texture.recipes import RECIPE_NAMES, make_recipe
from medaudit.texture.train import TrainConfig


def _batch(n=4, size=12, seed=0):
    """Blob patches: labels 0..3 as nested spheres, intensities 0 / 0.3 / 0.6 / 0.9 plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    r = torch.linspace(-1, 1, size)
    zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")
    rad = (zz**2 + yy**2 + xx**2).sqrt()
    lab = torch.bucketize(-rad, torch.tensor([-0.9, -0.6, -0.3]))  # 0 outside ... 3 in the core
    img = lab.float() * 0.3
    x = img.expand(n, 1, size, size, size) + 0.01 * torch.randn(n, 1, size, size, size, generator=g)
    return x.contiguous(), lab.expand(n, 1, size, size, size).contiguous()


def test_registry_and_validation():
    assert set(RECIPE_NAMES) == {"clean", "filtered", "mixed", "bigaug", "synthseg", "gin"}
    with pytest.raises(InputError, match="unknown training recipe"):
        make_recipe("bogus")
    with pytest.raises(InputError, match="unknown option"):
        make_recipe("bigaug", {"kk": 2})
    with pytest.raises(InputError, match="famil"):
        make_recipe("mixed", {"exclude_families": ["nope"]})
    with pytest.raises(InputError, match="p must be"):
        make_recipe("mixed", {"p": "half"})
    with pytest.raises(InputError, match="blur"):
        make_recipe("synthseg", {"blur": [2, 1]})
    with pytest.raises(InputError, match="layers"):
        make_recipe("gin", {"layers": 0})
    with pytest.raises(InputError, match="list of family names"):  # a string was split into letters
        make_recipe("mixed", {"exclude_families": "noise"})
    assert make_recipe("mixed", {"exclude_families": ["noise"]}).exclude == ("noise",)
    with pytest.raises(InputError, match="k must be"):
        make_recipe("bigaug", {"families": ["noise", "blur"], "k": 3})
    with pytest.raises(InputError, match="recipe"):
        TrainConfig(recipe="gin", mode="filtered", filter_name="gaussian_blur")


def test_legacy_modes_map_onto_recipes():
    assert TrainConfig().recipe_name == "clean"
    assert TrainConfig(mode="filtered", filter_name="gaussian_blur").recipe_name == "filtered"
    online = TrainConfig(mode="online", filter_name="gaussian_blur", filter_prob=0.3)
    r = online.make_recipe()
    assert online.recipe_name == "mixed" and r.pool == ["gaussian_blur"] and r.p == 0.3
    assert r.train_families() == ["blur"]
    assert TrainConfig(recipe="filtered", filter_name="gamma").make_recipe().train_families() == ["intensity"]


def test_clean_is_identity_and_recipes_are_reproducible():
    x, y = _batch()
    assert torch.equal(make_recipe("clean")(x, y, 0), x)
    for name in ("mixed", "bigaug", "synthseg", "gin"):
        r = make_recipe(name, {"p": 1.0}, spacing=(2.0, 2.0, 2.0), wm_label=3)
        a, b, c = r(x, y, 5), r(x, y, 5), r(x, y, 6)
        assert a.shape == x.shape and torch.isfinite(a).all()
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name


def test_mixed_transforms_a_fraction_p_and_leaves_the_rest_clean():
    x, y = _batch(n=64, size=8)
    r = make_recipe("mixed", {"p": 0.5, "filters": ["gaussian_noise"], "severity": 5}, wm_label=3)
    out = r(x, y, 1)
    changed = [(out[b] != x[b]).any().item() for b in range(64)]
    assert sum(changed) == 32  # floor(0.5 * 64 + u): a fraction p of every batch
    pairs = [make_recipe("mixed", {"p": 0.5}).chosen(2, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(len(c) == 1 for c in pairs)  # batch of 2 at p = 0.5: always one clean, one transformed
    rate = sum(
        len(make_recipe("mixed", {"p": 0.3}).chosen(2, torch.Generator().manual_seed(s))) for s in range(400)
    )
    assert 0.25 < rate / 800 < 0.35
    assert r.chosen(64, torch.Generator().manual_seed(1)) == [b for b in range(64) if changed[b]]
    assert not any((make_recipe("mixed", {"p": 0.0})(x, y, 1) != x).any() for _ in range(1))


def test_bigaug_composes_k_distinct_families_in_random_order():
    from medaudit.texture.filters import family_of

    r = make_recipe("bigaug", {"k": 3, "exclude_families": ["noise"]})
    assert "noise" not in r.train_families()
    g = torch.Generator().manual_seed(0)
    plans = [r.plan(g) for _ in range(50)]
    for plan in plans:
        fams = [family_of(name) for name, _, _ in plan]
        assert len(plan) == 3 and len(set(fams)) == 3 and "noise" not in fams
        assert all(1 <= lvl <= 5 for _, lvl, _ in plan)
    firsts = {family_of(p[0][0]) for p in plans}
    assert len(firsts) >= 4  # the order (and the first family) varies


def test_synthseg_draws_per_label_gaussian_intensities():
    x, y = _batch(n=2, size=12)
    r = make_recipe("synthseg", {"p": 1.0, "blur": [0, 0], "bias": [0, 0], "noise": [0, 0]})
    means = []
    for seed in (0, 1):
        out = r(x, y, seed)
        m = torch.stack([out[0][y[0] == k].mean() for k in range(4)])
        within = max(float(out[0][y[0] == k].std()) for k in range(4))
        assert within < float(m.max() - m.min()) / 2  # constant-ish within a label
        means.append(m)
    assert not torch.allclose(means[0], means[1], atol=1e-3)  # intensities differ across draws
    assert set(make_recipe("synthseg", {"exclude_families": ["noise"]}).train_families()) == {
        "texture",
        "blur",
        "bias",
    }


def test_gin_is_a_random_conv_mix_with_moments_and_shape_kept():
    x, y = _batch(n=3)
    out = make_recipe("gin", {"p": 1.0})(x, y, 3)
    assert out.shape == x.shape
    torch.testing.assert_close(out.mean((2, 3, 4)), x.mean((2, 3, 4)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std((2, 3, 4)), x.std((2, 3, 4)), atol=1e-4, rtol=1e-3)
    corr = [torch.corrcoef(torch.stack([out[b].flatten(), x[b].flatten()]))[0, 1] for b in range(3)]
    assert all(c < 0.9999 for c in corr)  # not the input
    assert make_recipe("gin").train_families() == ["texture"]


def test_recipe_run_is_reproducible_and_resume_is_bit_identical(tmp_path):
    from medaudit.texture.train import load_checkpoint, load_model, train
    from test_texture_train import _config, _dataset

    data = _dataset(tmp_path / "vols", n=4)
    cfg = _config(
        data, iterations=4, checkpoint_every=2, val_every=4, recipe="bigaug",
        recipe_options={"k": 2, "p": 1.0}, input_norm="zscore",
    )  # fmt: skip
    full = train(cfg, tmp_path / "full", progress=False)
    again = train(cfg, tmp_path / "again", progress=False)
    part = train(cfg, tmp_path / "part", stop_after=2, progress=False)
    assert part.name == "checkpoint.pt"
    resumed = train(cfg, tmp_path / "part", progress=False)
    a, b, c = (load_checkpoint(p)["state_dict"] for p in (full, again, resumed))
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k
    model, meta = load_model(full)
    assert meta["recipe"] == "bigaug" and meta["severity_version"] == 2
    assert model.input_norm == "zscore" and "noise" in meta["train_families"]


def test_study_config_recipes_and_leave_one_family_out():
    from medaudit.studies.texture_robustness import study as st

    raw = {
        "name": "r",
        "data": {"source": "mni-phantom", "n_subjects": 3},
        "train": {"iterations": 3, "severity_version": 2},
        "train_filters": [{"name": "gaussian_blur", "severities": [3]}],
        "recipes": [
            {"name": "gin"},
            {"name": "bigaug", "options": {"k": 2}, "leave_one_family_out": ["noise", "blur"]},
        ],
        "seeds": [0, 1],
        "test": {"corruptions": ["gaussian_noise"], "severities": [5], "severity_version": 2},
    }
    cfg = st.parse_config(raw, "r.yaml")
    assert [e.label for e in cfg.recipes] == ["gin", "bigaug[-noise](k=2)", "bigaug[-blur](k=2)"]
    trains = [t for t in st.build_tasks(cfg) if t.kind == "train"]
    assert len(trains) == 2 * (2 + 3)  # (baseline + blur filter + 3 recipe variants) x 2 seeds
    lofo = [t for t in trains if t.spec.get("left_out") == "noise" and t.spec["seed"] == 1]
    tc = st._make_train_config(lofo[0].spec)
    assert tc.recipe == "bigaug" and tc.recipe_options["exclude_families"] == ["noise"]
    assert "noise" not in tc.make_recipe().train_families() and tc.mode == "clean"
    evals = [t for t in st.build_tasks(cfg) if t.kind == "eval"]
    assert all(t.spec["severity_version"] == 2 for t in evals)
    assert {t.spec.get("left_out") for t in evals} == {None, "noise", "blur"}
    bad = {**raw, "recipes": [{"name": "bigaug", "leave_one_family_out": ["texture"]}]}
    with pytest.raises(InputError, match="leave_one_family_out"):
        st.parse_config(bad, "r.yaml")
    with pytest.raises(InputError, match="severity_version"):
        st.parse_config({**raw, "test": {**raw["test"], "severity_version": 3}}, "r.yaml")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["mixed", "bigaug", "synthseg", "gin"])
def test_recipes_run_on_the_cuda_device(name):
    x, y = _batch(n=4, size=16)
    r = make_recipe(name, {"p": 1.0}, spacing=(2.0, 2.0, 2.0), wm_label=3)
    out = r(x.cuda(), y.cuda(), 3)
    assert out.is_cuda and out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out, r(x.cuda(), y.cuda(), 3))


def test_input_normalisation_modes():
    from medaudit.texture.preprocess import normalise_input

    x = 3.0 * torch.rand(2, 1, 8, 8, 8) + torch.tensor([0.0, 5.0]).view(2, 1, 1, 1, 1)
    z = normalise_input(x, "zscore")
    torch.testing.assert_close(z.mean((2, 3, 4)), torch.zeros(2, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((2, 3, 4)), torch.ones(2, 1), atol=1e-5, rtol=0)
    p = normalise_input(x, "percentile")
    assert abs(float(p[1].quantile(0.01))) < 1e-5 and abs(float(p[1].quantile(0.99)) - 1) < 1e-5
    torch.testing.assert_close(normalise_input(2 * x + 1, "zscore"), z, atol=1e-4, rtol=0)  # gain/offset gone
    assert normalise_input(x, "none") is x
    with pytest.raises(InputError, match="input_norm"):
        TrainConfig(input_norm="minmax")


def test_cli_train_with_a_recipe(tmp_path, capsys):
    import json

    from medaudit.cli import main
    from medaudit.texture.train import load_checkpoint
    from test_texture_train import _dataset

    data = _dataset(tmp_path / "vols", n=3)
    common = ["texture", "train", "--data", "folder", "--data-path", str(data), "--iterations", "2",
              "--patch-size", "16", "--channels", "4,8", "--device", "cpu"]  # fmt: skip
    bad = main([*common, "--out", str(tmp_path / "bad"), "--recipe", "gin", "--recipe-options", "{p: 1"])
    assert bad == 2 and "recipe-options" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "x"), "--recipe", "nope"]) == 2
    rc = main(
        [*common, "--out", str(tmp_path / "r"), "--recipe", "mixed",
         "--recipe-options", '{"p": 1.0, "families": ["noise"]}', "--input-norm", "zscore"]
    )  # fmt: skip
    assert rc == 0
    meta = load_checkpoint(tmp_path / "r" / "model.pt")
    cfg = json.loads(meta["config"])
    assert cfg["recipe"] == "mixed" and cfg["input_norm"] == "zscore" and meta["train_families"] == ["noise"]
