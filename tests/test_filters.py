"""Defining-property tests of the 3D texture filters (small 32³ volumes)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from medaudit.errors import InputError
from medaudit.texture import filters as tf
from medaudit.texture.filters.ops import gaussian_blur

N = 32


def phantom(n: int = N, batch: int | None = None, seed: int = 0) -> torch.Tensor:
    """A smooth brain-like phantom in [0, 1]: nested ellipsoids plus a gentle texture, (1, n, n, n)."""
    g = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(*[torch.linspace(-1, 1, n)] * 3, indexing="ij")
    r = (z / 0.8) ** 2 + (y / 0.9) ** 2 + (x / 0.7) ** 2
    img = (
        0.3 * (r < 0.9).float()
        + 0.4 * (r < 0.45).float()
        + 0.2 * (((z - 0.2) ** 2 + x**2 + y**2) < 0.05).float()
    )
    img = img + 0.05 * torch.sin(6 * x + 4 * y) * (r < 0.9).float()
    img = gaussian_blur(img[None, None], 0.7)[0] + 0.01 * torch.rand(1, n, n, n, generator=g)
    img = img.clamp(0, 1)
    if batch is None:
        return img
    return torch.stack([phantom(n, None, seed + b) for b in range(batch)])


def high_freq_energy(x: torch.Tensor, dims=(-3, -2, -1)) -> float:
    spec = torch.fft.fftn(x, dim=dims)
    grids = torch.meshgrid(*[torch.fft.fftfreq(x.shape[d]) for d in dims], indexing="ij")
    rad = torch.sqrt(sum(gr**2 for gr in grids))
    return float((spec.abs() ** 2 * (rad > 0.25)).sum())


def test_gaussian_noise_residual_std():
    x = phantom()
    out = tf.GaussianNoise(std=0.1, seed=1)(x)
    res = out - x
    assert abs(float(res.std()) - 0.1) < 0.003
    assert abs(float(res.mean())) < 0.003


def test_rician_nonnegative_and_background_mean():
    x = torch.zeros(1, N, N, N)
    out = tf.RicianNoise(std=0.1, seed=2)(x)
    assert float(out.min()) >= 0.0
    # on zero signal the magnitude is Rayleigh with mean sigma * sqrt(pi / 2)
    assert abs(float(out.mean()) - 0.1 * math.sqrt(math.pi / 2)) < 0.003
    assert float(tf.RicianNoise(std=0.2, seed=2)(phantom() - 0.5).min()) >= 0.0


def test_salt_pepper_fraction_and_values():
    x = torch.rand(1, N, N, N) * 0.8 + 0.1
    p = 0.05
    out = tf.SaltPepperNoise(p=p, salt_ratio=0.3, seed=3)(x)
    changed = out != x
    frac = float(changed.float().mean())
    assert abs(frac - p) < 0.005
    vals = out[changed]
    lo, hi = float(x.min()), float(x.max())
    assert bool(((vals == lo) | (vals == hi)).all())
    assert abs(float((vals == hi).float().mean()) - 0.3) < 0.05


def test_speckle_is_multiplicative():
    x = phantom()
    out = tf.SpeckleNoise(std=0.2, seed=4)(x)
    assert bool((out[x == 0] == 0).all())
    ratio = (out / x)[x > 0.2] - 1
    assert abs(float(ratio.std()) - 0.2) < 0.01


def test_blur_reduces_and_unsharp_increases_high_frequencies():
    x = phantom()
    e0 = high_freq_energy(x)
    assert high_freq_energy(tf.GaussianBlur(sigma=1.0)(x)) < 0.5 * e0
    assert high_freq_energy(tf.UnsharpMask(sigma=1.0, amount=1.5)(x)) > 1.5 * e0


def test_blur_matches_scipy_nearest():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(1, 20, 24, 28, dtype=torch.float64)
    ours = tf.GaussianBlur(sigma=(1.0, 1.5, 0.7))(x)[0].numpy()
    ref = gaussian_filter(x[0].numpy(), (1.0, 1.5, 0.7), mode="nearest")
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_gibbs_zero_energy_outside_window():
    x = phantom()
    keep = 0.5
    out = tf.GibbsRinging(keep=keep)(x)
    spec = torch.fft.fftn(out.double(), dim=(-3, -2, -1))
    cut = math.floor(keep * N / 2)
    k = torch.fft.fftfreq(N, 1 / N).abs()
    inside = (k[:, None, None] <= cut) & (k[None, :, None] <= cut) & (k[None, None, :] <= cut)
    total = float((spec.abs() ** 2).sum())
    assert float((spec.abs() ** 2)[:, ~inside].sum()) < 1e-9 * total
    ref = torch.fft.fftn(x.double(), dim=(-3, -2, -1))
    torch.testing.assert_close(spec[:, inside], ref[:, inside], atol=1e-3, rtol=1e-4)
    assert torch.equal(tf.GibbsRinging(keep=1.0)(x), x) or torch.allclose(
        tf.GibbsRinging(keep=1.0)(x), x, atol=1e-6
    )


def test_spike_energy_at_chosen_positions():
    x = phantom()
    pos = [[0.25, -0.125, 0.375]]
    f = tf.Spike(intensity=0.5, positions=pos)
    diff = torch.fft.fftn((f(x) - x).double(), dim=(-3, -2, -1))[0]
    kd, kh, kw = f.bins(x.shape[-3:])[0]
    assert (kd, kh, kw) == (8, -4, 12)
    e = diff.abs() ** 2
    at = float(e[kd % N, kh % N, kw % N] + e[-kd % N, -kh % N, -kw % N])
    assert at > 0.999 * float(e.sum())
    # amplitude follows TorchIO: spike magnitude = intensity * max|FFT(x)| (= sum x for x >= 0)
    assert abs(abs(complex(diff[kd % N, kh % N, kw % N])) - 0.5 * float(x.sum()) / 2) < 1e-2 * float(x.sum())


def test_spike_matches_torchio():
    tio = pytest.importorskip("torchio")
    x = phantom()
    tio_pos = np.array([[0.3, 0.8, 0.55]])  # TorchIO: fractions of the fftshift-ed spectrum, in [0, 1)
    ours_pos = [[(math.floor(p * N) - N // 2) / N for p in tio_pos[0]]]
    ref = tio.Spike(spikes_positions=tio_pos, intensity=0.7)(tio.ScalarImage(tensor=x)).data
    torch.testing.assert_close(tf.Spike(intensity=0.7, positions=ours_pos)(x), ref, atol=1e-5, rtol=1e-4)


def test_wrap_around_is_periodic_fold_over():
    x = phantom()
    f = tf.WrapAround(fraction=0.25, axis=1)
    out = f(x)
    period = f.period(N)
    assert period == 24
    torch.testing.assert_close(out[:, :, period:], out[:, :, : N - period])
    # one period holds all the signal of each line (content folded, not lost)
    torch.testing.assert_close(out[:, :, :period].sum(2), x.sum(2), atol=1e-4, rtol=1e-5)
    # content near the edge of the FOV appears shifted by the period
    delta = torch.zeros(1, N, N, N)
    delta[0, 10, 1, 7] = 1.0
    out_d = f(delta)
    assert float(out_d[0, 10, 1 + period, 7]) == 1.0 and float(out_d[0, 10, 1, 7]) == 1.0


def test_ghosting_copies_along_axis_only():
    delta = torch.zeros(1, N, N, N)
    delta[0, 5, 9, 13] = 1.0
    out = tf.Ghosting(num_ghosts=4, intensity=0.8, axis=0, restore=0.0)(delta)
    change = (out - delta).abs()
    mask = torch.zeros_like(change, dtype=torch.bool)
    mask[0, :, 9, 13] = True
    assert float(change[~mask].max()) < 1e-6
    line = (out - delta)[0, :, 9, 13].abs()
    ghosts = [(5 + k * N // 4) % N for k in range(1, 4)]
    assert all(float(line[g]) > 0.1 for g in ghosts)


def test_ghosting_matches_torchio():
    tio = pytest.importorskip("torchio")
    x = phantom()
    ours = tf.Ghosting(num_ghosts=5, intensity=0.6, axis=1, restore=0.05)(x)
    ref = tio.Ghosting(num_ghosts=5, axis=1, intensity=0.6, restore=0.05)(tio.ScalarImage(tensor=x)).data
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-4)


def _motion_reference(x: torch.Tensor, f: tf.Motion) -> torch.Tensor:
    """TorchIO's algorithm with full 3D FFTs: segment the centred spectrum along the axis."""
    import torch.nn.functional as F

    from medaudit.texture.filters.motion import rigid_theta

    transforms, times = f.resolved()
    x5 = x[None].double()
    n = x.shape[-1]
    bounds = [0, *[int(t * n) for t in times], n]
    centre = max(i for i in range(len(bounds) - 1) if bounds[i] <= n // 2)
    imgs, k = [], 0
    for seg in range(len(bounds) - 1):
        if seg == centre:
            imgs.append(x5)
        else:
            th = rigid_theta(transforms[k], x.shape[-3:])[None]
            grid = F.affine_grid(th, list(x5.shape), align_corners=False)
            imgs.append(F.grid_sample(x5, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
            k += 1
    out = torch.zeros_like(x5, dtype=torch.complex128)
    for seg, img in enumerate(imgs):
        spec = torch.fft.fftshift(torch.fft.fftn(img, dim=(-3, -2, -1)), dim=(-3, -2, -1))
        out[..., bounds[seg] : bounds[seg + 1]] = spec[..., bounds[seg] : bounds[seg + 1]]
    return torch.fft.ifftn(torch.fft.ifftshift(out, dim=(-3, -2, -1)), dim=(-3, -2, -1)).real[0]


def test_motion_matches_full_kspace_reference():
    x = phantom()
    f = tf.Motion(transforms=[[5, -3, 2, 2, 0, -1], [-4, 2, 0, -2, 1.5, 0]], times=[0.3, 0.7], axis=2)
    out = f(x)
    torch.testing.assert_close(out.double(), _motion_reference(x, f), atol=1e-4, rtol=1e-4)
    assert float((out - x).abs().mean()) > 1e-3
    still = tf.Motion(transforms=[[0] * 6, [0] * 6], times=[0.3, 0.7])(x)
    torch.testing.assert_close(still, x, atol=1e-5, rtol=1e-5)


def test_bias_field_smooth_and_multiplicative():
    from medaudit.texture.filters.intensity import polynomial_terms

    f = tf.BiasField(magnitude=0.4, order=3, seed=5)
    x1, x2 = phantom() + 0.1, torch.rand(1, N, N, N) + 0.1
    field1, field2 = f(x1) / x1, f(x2) / x2
    torch.testing.assert_close(field1, field2, atol=1e-5, rtol=1e-5)  # independent of the image
    torch.testing.assert_close(field1[0], f.field((N, N, N)), atol=1e-5, rtol=1e-5)
    # smooth: log(field) is exactly a cubic polynomial (least-squares residual ~ 0)
    c = torch.linspace(-1, 1, N, dtype=torch.float64)
    z, y, xx = torch.meshgrid(c, c, c, indexing="ij")
    basis = torch.stack([(z**i * y**j * xx**k).flatten() for i, j, k in polynomial_terms(3)], 1)
    target = torch.log(f.field((N, N, N), dtype=torch.float64)).flatten()
    sol = torch.linalg.lstsq(basis, target[:, None]).solution
    assert float((basis @ sol - target[:, None]).abs().max()) < 1e-8
    assert float(field1.min()) > 0


def test_gamma_monotone_and_contrast_moments():
    v = torch.linspace(0, 1, N**3).reshape(1, N, N, N)
    for g in (0.5, 1.7, 2.5):
        out = tf.Gamma(gamma=g)(v).flatten()
        assert bool((out[1:] >= out[:-1]).all())
    torch.testing.assert_close(tf.Gamma(gamma=1.0)(v), v)
    x = phantom()
    out = tf.Contrast(factor=0.5)(x)
    assert abs(float(out.mean() - x.mean())) < 1e-6
    assert abs(float(out.std() / x.std()) - 0.5) < 1e-4


def test_low_resolution_one_axis_only():
    x = phantom()
    out = tf.LowResolution(factor=4.0, axis=0)(x)
    # a volume constant along axis 0 is untouched: nothing happens along the other axes
    flat = x[:, N // 2 : N // 2 + 1].expand(1, N, N, N).contiguous()
    torch.testing.assert_close(tf.LowResolution(factor=4.0, axis=0)(flat), flat, atol=1e-5, rtol=1e-5)

    def kept_high(d: int) -> float:
        sx, so = torch.fft.fft(x, dim=d).abs() ** 2, torch.fft.fft(out, dim=d).abs() ** 2
        view = [1, 1, 1, 1]
        view[d] = -1
        hi = (torch.fft.fftfreq(N).abs() > 0.2).view(view)
        return float((so * hi).sum() / (sx * hi).sum())

    along, across = kept_high(1), min(kept_high(2), kept_high(3))
    assert along < 0.15
    assert across > 3 * along


def test_rand_conv_identity_and_moments():
    x = phantom()
    torch.testing.assert_close(tf.RandConv(alpha=1.0, seed=0)(x), x)
    out = tf.RandConv(kernel_size=3, alpha=0.0, seed=0)(x)
    assert abs(float(out.mean() - x.mean())) < 1e-4 and abs(float(out.std() / x.std()) - 1) < 1e-3
    assert float((out - x).abs().mean()) > 1e-3
    # 1x1x1 kernel: an affine intensity map (correlation +-1 with the input)
    one = tf.RandConv(kernel_size=1, alpha=0.0, seed=3)(x)
    corr = np.corrcoef(one.flatten().numpy(), x.flatten().numpy())[0, 1]
    assert abs(abs(corr) - 1) < 1e-5


def test_label_remap_uses_label_means():
    x = phantom()
    label = torch.zeros(1, N, N, N, dtype=torch.long)
    label[:, 8:24] = 1
    label[:, 12:20, 12:20] = 2
    f = tf.LabelIntensityRemap(
        mix=1.0, means=[0.1, 0.9, 0.5], stds=[0.0, 0.0, 0.0], blur_sigma=0.0, bias_magnitude=0.0, seed=0
    )
    out = f(x, label)
    lo, hi = float(x.min()), float(x.max())
    for lab, expected in ((0, 0.0), (1, 1.0), (2, 0.5)):  # min-max of {0.1, 0.9, 0.5} in the input range
        vals = out[label == lab]
        torch.testing.assert_close(
            vals, torch.full_like(vals, lo + expected * (hi - lo)), atol=1e-5, rtol=1e-5
        )
    # without a label map, intensity quantile classes stand in for tissues
    auto = tf.LabelIntensityRemap(mix=1.0, seed=1)(x)
    assert auto.shape == x.shape and float((auto - x).abs().mean()) > 1e-3
    with pytest.raises(InputError):
        f(x, label[:, :16])


@pytest.mark.parametrize("name", tf.list_corruptions())
def test_distortion_grows_with_severity(name):
    x = phantom()
    errs = [float(((tf.get_corruption(name, s, seed=7)(x) - x) ** 2).mean()) for s in range(6)]
    assert errs[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(errs)), errs


@pytest.mark.parametrize("name", tf.list_corruptions())
def test_random_wrapper_replays_exactly(name):
    x = phantom()
    rnd = tf.make_random(name, seed=11)
    label = (x > 0.3).long() + (x > 0.6).long()
    for _ in range(2):
        out = rnd(x, label) if name == "label_remap" else rnd(x)
        rec = rnd.last_record
        assert rec["applied"] and rec["name"] == name and rnd.last_params == rec["params"]
        again = tf.replay(rec)
        ref = again(x, label) if name == "label_remap" else again(x)
        assert torch.equal(out, ref)
    # same seed -> same sequence of parameters
    rnd2 = tf.make_random(name, seed=11)
    rnd2(x, label) if name == "label_remap" else rnd2(x)
    rnd3 = tf.make_random(name, seed=11)
    rnd3(x, label) if name == "label_remap" else rnd3(x)
    assert rnd2.last_params == rnd3.last_params


def test_random_wrapper_probability_and_generator():
    x = phantom()
    rnd = tf.RandomGaussianNoise(std=0.1, p=0.0, seed=0)
    assert rnd(x) is x and rnd.last_params is None and not rnd.last_record["applied"]
    g = torch.Generator().manual_seed(3)
    a = tf.RandomGaussianNoise(std=(0.0, 0.1), seed=g)(x)
    b = tf.RandomGaussianNoise(std=(0.0, 0.1), seed=torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", tf.list_corruptions())
def test_batched_equals_per_sample(name):
    xb = phantom(batch=3)
    f = tf.get_corruption(name, 3, seed=20)
    out = f(xb)
    for b in range(3):
        params = f.get_params()
        if "seed" in params:
            params["seed"] = 20 + b
        single = tf.make_filter(name, **params)(xb[b])
        torch.testing.assert_close(out[b], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", tf.list_corruptions())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dtype_and_device_preserved(name, dtype):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        x = phantom(16).to(device=dev, dtype=dtype)
        out = tf.get_corruption(name, 2, seed=0)(x)
        assert out.dtype == dtype and out.device == x.device and out.shape == x.shape
        assert bool(torch.isfinite(out).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", tf.list_corruptions())
def test_cuda_matches_cpu_for_deterministic_filters(name):
    x = phantom(16)
    f = tf.get_corruption(name, 3, seed=0)
    if f.stochastic and name not in ("spike", "bias_field", "motion"):
        pytest.skip("noise differs between CPU and CUDA generators")
    torch.testing.assert_close(f(x.cuda()).cpu(), f(x), atol=1e-4, rtol=1e-4)


def test_registry_api():
    assert set(tf.SEVERITY) == set(tf.FILTERS)
    for name, spec in tf.FILTERS.items():
        assert sorted(spec.severity) == [1, 2, 3, 4, 5]
        assert tf.family_of(name) == spec.family in tf.FAMILIES
    assert set(tf.list_corruptions("noise")) == {
        "gaussian_noise",
        "rician_noise",
        "salt_pepper",
        "speckle_noise",
    }
    assert tf.list_corruptions("kspace") == ["gibbs", "spike", "wrap_around", "ghosting"]
    assert sorted({tf.family_of(n) for n in tf.list_corruptions()}) == sorted(tf.FAMILIES)
    x = phantom()
    assert tf.get_corruption("gaussian_noise", 0)(x) is x
    with pytest.raises(InputError, match="unknown filter"):
        tf.get_corruption("nope", 1)
    with pytest.raises(InputError, match="severity"):
        tf.get_corruption("gamma", 6)
    with pytest.raises(InputError, match="family"):
        tf.list_corruptions("colour")
    a = tf.get_corruption("gaussian_noise", 2, seed=1)(x)
    assert torch.equal(a, tf.get_corruption("gaussian_noise", 2, seed=1)(x))
    assert not torch.equal(a, tf.get_corruption("gaussian_noise", 2, seed=2)(x))


def test_bad_input_raises_input_error():
    with pytest.raises(InputError, match="floating"):
        tf.GaussianBlur()(torch.zeros(1, 8, 8, 8, dtype=torch.long))
    with pytest.raises(InputError, match="shape"):
        tf.GaussianBlur()(torch.zeros(8, 8, 8))
    with pytest.raises(InputError):
        tf.WrapAround(axis=3)(torch.zeros(1, 8, 8, 8))


def test_monai_compose_and_dict_transform():
    from monai.data import MetaTensor
    from monai.transforms import Compose

    x = phantom()
    pipe = Compose([tf.get_corruption("gaussian_blur", 2), tf.RandomGaussianNoise(std=0.05, seed=0)])
    out = pipe(x)
    assert out.shape == x.shape
    mt = MetaTensor(x, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    out_mt = Compose([tf.GaussianBlur(sigma=1.0)])(mt)
    assert isinstance(out_mt, MetaTensor)
    torch.testing.assert_close(out_mt.affine, mt.affine)
    torch.testing.assert_close(out_mt.as_tensor(), tf.GaussianBlur(sigma=1.0)(x))

    label = (x > 0.3).long()
    d = {"image": x, "label": label}
    dpipe = Compose(
        [
            tf.FilterD(keys=("image",), transform=tf.RandomGamma(seed=1), record=True),
            tf.LabelIntensityRemapD(tf.RandomLabelIntensityRemap(seed=2)),
        ]
    )
    res = dpipe(d)
    assert torch.equal(res["label"], label)
    assert res["image_filter"]["name"] == "gamma"
    assert float((res["image"] - x).abs().mean()) > 1e-3


def test_torchio_pipeline():
    tio = pytest.importorskip("torchio")
    x = phantom()
    label = (x > 0.3).long()
    subject = tio.Subject(t1=tio.ScalarImage(tensor=x), seg=tio.LabelMap(tensor=label))
    blur = tf.GaussianBlur(sigma=1.0)
    pipe = tio.Compose([tf.as_torchio(blur), tio.RescaleIntensity(out_min_max=(0, 1))])
    out = pipe(subject)
    torch.testing.assert_close(out["seg"].data, label)
    ref = blur(x)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    torch.testing.assert_close(out["t1"].data, ref, atol=1e-5, rtol=1e-5)
    rnd = tf.as_torchio(tf.RandomMotion(degrees=5, translation=3, seed=0))
    moved = rnd(subject)
    rec = rnd.last_records[0]
    torch.testing.assert_close(moved["t1"].data, tf.replay(rec)(x), atol=1e-6, rtol=1e-6)
