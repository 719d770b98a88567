"""Worker-safe randomness of the Random* filters and MONAI's Randomizable contract."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medaudit.texture import filters as tf


class _Noisy(Dataset):
    """Two items, each the filter applied to zeros (so the output is the drawn noise)."""

    def __init__(self, filt):
        self.filt = filt

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.filt(torch.zeros(1, 6, 6, 6))


def _per_worker(filt, loader_cls=DataLoader):
    torch.manual_seed(0)
    batches = list(loader_cls(_Noisy(filt), batch_size=1, num_workers=2, shuffle=False))
    return batches[0][0], batches[1][0]  # item 0 from worker 0, item 1 from worker 1


def test_unseeded_filter_used_before_gives_different_noise_in_each_worker():
    filt = tf.RandomGaussianNoise(std=(0.5, 1.0))
    filt(torch.zeros(1, 4, 4, 4))  # called once in the main process first
    a, b = _per_worker(filt)
    assert not torch.equal(a, b)


def test_seeded_filter_gives_different_but_reproducible_draws_per_worker():
    filt = tf.RandomGaussianNoise(std=(0.5, 1.0), seed=3)
    filt(torch.zeros(1, 4, 4, 4))
    a, b = _per_worker(filt)
    assert not torch.equal(a, b)
    a2, b2 = _per_worker(filt)
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_monai_dataloader_reseeds_through_set_random_state():
    from monai.data import DataLoader as MonaiLoader

    filt = tf.RandomGaussianNoise(std=(0.5, 1.0), seed=3)
    a, b = _per_worker(filt, MonaiLoader)
    assert not torch.equal(a, b)


def test_set_determinism_reseeds_an_existing_filter():
    from monai.utils import set_determinism

    filt = tf.RandomGaussianNoise(std=(0.5, 1.0))
    x = torch.zeros(1, 4, 4, 4)
    filt(x)
    set_determinism(seed=11)
    a = filt(x)
    set_determinism(seed=11)
    b = filt(x)
    set_determinism(seed=None)
    assert torch.equal(a, b)
    assert not torch.equal(a, filt(x))


def test_randomizable_contract():
    filt = tf.RandomGamma(log_gamma=0.5)
    assert filt.set_random_state(seed=4) is filt
    filt.randomize(None)
    first = filt.last_transform.get_params()
    x = torch.rand(1, 4, 4, 4)
    y = filt(x, randomize=False)  # applies the filter drawn by randomize()
    assert filt.last_params == first and torch.equal(y, tf.replay(filt.last_record)(x))
    filt.set_random_state(state=np.random.RandomState(4))
    filt.randomize()
    assert filt.last_transform.get_params() == first  # same seed, same state: same draw
    assert isinstance(filt.R, np.random.RandomState)


def test_monai_compose_reaches_the_filters_through_the_dictionary_adapter():
    from monai.transforms import Compose

    pipe = Compose([tf.FilterD(keys="image", transform=tf.RandomGaussianNoise(std=(0.5, 1.0)))])
    x = {"image": torch.zeros(1, 4, 4, 4)}
    pipe.set_random_state(seed=5)
    a = pipe(x)["image"]
    pipe.set_random_state(seed=5)
    assert torch.equal(a, pipe(x)["image"])
    pipe.set_random_state(seed=6)
    assert not torch.equal(a, pipe(x)["image"])
