"""A Ray address that is well formed but that nothing answers at: refused at once, naming the flag.

Before, ``ray.init`` retried such an address for about a minute and then ended the process with
``SystemExit 15`` (texture study, bench-scenarios) or an internal error; the check is a plain TCP
connection with a timeout, made just before Ray connects."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.errors import InputError
from medaudit.rungrid import check_ray_reachable

from .conftest import make_table, one_line, snapshot


@pytest.fixture
def closed_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_an_address_nothing_answers_at_is_refused_naming_flag_and_host(closed_port):
    with pytest.raises(
        InputError, match=rf"^--ray-address '127.0.0.1:{closed_port}': cannot reach 127.0.0.1"
    ):
        check_ray_reachable(f"127.0.0.1:{closed_port}")
    with pytest.raises(InputError, match=rf"^cfg: key 'ray_address' 'ray://127.0.0.1:{closed_port}'"):
        check_ray_reachable(f"ray://127.0.0.1:{closed_port}", "cfg: key 'ray_address'")
    with pytest.raises(InputError, match=r"cannot reach no-such-host\.invalid port 6379"):
        check_ray_reachable("no-such-host.invalid:6379")


def test_reachable_and_self_resolving_addresses_pass(listening_port):
    check_ray_reachable(f"127.0.0.1:{listening_port}")
    check_ray_reachable(f"ray://127.0.0.1:{listening_port}")
    for address in ("local", "auto", "anyscale://project/cluster"):
        check_ray_reachable(address)  # Ray resolves these itself


def test_texture_study_with_an_unreachable_cluster_fails_at_once(cli, tmp_path, closed_port):
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    rc, err = cli(
        "texture",
        "study",
        "study_small",
        "--out",
        tmp_path / "s",
        "--ray-address",
        f"127.0.0.1:{closed_port}",
    )
    assert rc == 2 and one_line(err).startswith(
        f"error: --ray-address '127.0.0.1:{closed_port}': cannot reach"
    ), err
    assert time.monotonic() - t0 < 45 and snapshot(tmp_path) == before


def test_audit_embedding_images_on_an_unreachable_cluster_fails_naming_the_flag(
    cli, audit_args, tmp_path, closed_port
):
    make_table(tmp_path / "data")
    t = tmp_path / "data" / "cases.csv"
    df = pd.read_csv(t)
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in df.index:
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    df["image"] = [str(tmp_path / "imgs" / f"{i}.png") for i in df.index]
    df.to_csv(t, index=False)
    before = snapshot(tmp_path)
    image = ["--modalities", "report,metadata,image", "--image-encoder", "efficientnet-lite0"]
    image += ["--encoder-opt", "image.size=32", "--ray-address", f"127.0.0.1:{closed_port}"]
    rc, err = cli(*audit_args(t, tmp_path / "out", *image))
    assert rc == 2 and one_line(err).startswith(
        f"error: --ray-address '127.0.0.1:{closed_port}': cannot reach"
    ), err
    assert snapshot(tmp_path) == before
