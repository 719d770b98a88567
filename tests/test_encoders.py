"""Tests for medaudit.audit.encoders: registry, image/report/metadata encoders, resumable cache."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from encoder_doubles import Counting
from medaudit.audit.encoders import (
    EfficientNetLite0Encoder,
    TfidfSVDEncoder,
    cache_folder,
    encode_cached,
    extract_sections,
    get_encoder,
    list_encoders,
    register_encoder,
    select_sections,
)
from medaudit.audit.encoders import base as enc_base
from medaudit.audit.encoders.image import map_state_dict_in_order
from medaudit.data import assets
from medaudit.data.images import read_grayscale, resize_square
from medaudit.errors import InputError

REPORTS = [
    "FINDINGS: The heart is enlarged. Lungs are clear.\nIMPRESSION: Cardiomegaly.",
    "FINDINGS: No pneumothorax. Lungs clear.\nIMPRESSION: No acute cardiopulmonary process.",
    "Right chest tube in place. Small right apical pneumothorax.",
    "FINDINGS: Left lower lobe opacity.\nIMPRESSION: Pneumonia likely.",
    "The heart size is enlarged with mild pulmonary edema.",
    "No acute process. Normal chest radiograph.",
    "Support devices: endotracheal tube and central line in standard position.",
    "FINDINGS: Large left pleural effusion. IMPRESSION: Effusion, recommend follow up.",
]


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        _, xx = np.mgrid[0:80, 0:72]
        img = 120 + 60 * np.sin(xx / (3 + i)) + rng.normal(0, 10, (80, 72))
        p = d / f"img{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_defaults_and_user_encoders():
    enc = list_encoders()
    assert {"efficientnet-lite0", "xrv-densenet121", "open-clip", "torch-module"} <= set(enc["image"])
    assert {"tfidf-svd", "minilm", "hf"} <= set(enc["report"])
    assert {"tabular", "sentence"} <= set(enc["metadata"])
    assert isinstance(get_encoder("report"), TfidfSVDEncoder)
    assert isinstance(get_encoder("image", weights=None), EfficientNetLite0Encoder)
    with pytest.raises(InputError, match="unknown report encoder"):
        get_encoder("report", "nope")
    with pytest.raises(InputError, match="unknown modality"):
        get_encoder("audio", "x")

    @register_encoder("report", "length")
    class LengthEncoder:
        name, modality, requires_fit, dim = "length", "report", False, 1

        def fit(self, inputs):
            return self

        def encode(self, inputs):
            return np.array([[len(t)] for t in inputs], np.float32)

        def cache_key(self):
            return "length-v1"

    try:
        e = get_encoder("report", "length")
        assert isinstance(e, enc_base.Encoder)
        np.testing.assert_array_equal(e.encode(["ab", "abcd"]), [[2], [4]])
    finally:
        del enc_base._REGISTRY["report"]["length"]


# ------------------------------------------------------------------------------------------ image encoders


def test_efficientnet_genuine_imagenet_weights():
    """The shipped EfficientNet-PyTorch weights, mapped in order onto timm, classify a real photo correctly."""
    enc = EfficientNetLite0Encoder()
    model = enc.build_model(num_classes=1000).eval()
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    rgb = np.asarray(Image.open(photo).convert("RGB").resize((224, 224)), np.float32) / 255.0
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) == 652  # ImageNet "military uniform"
    assert float(probs[652]) > 0.3


def test_state_dict_mapping_checks_every_shape():
    src = {"a.w": torch.zeros(2, 3), "a.b": torch.zeros(2), "_fc.weight": torch.zeros(5, 2)}
    tgt = {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2)}
    out = map_state_dict_in_order(src, tgt, drop_prefixes=("_fc.",))
    assert list(out) == ["x.weight", "x.bias"]
    with pytest.raises(InputError, match="tensors"):
        map_state_dict_in_order(src, tgt)
    with pytest.raises(InputError, match=r"shape \(3, 2\)"):
        map_state_dict_in_order({"a.w": torch.zeros(3, 2), "a.b": torch.zeros(2)}, tgt)


def test_efficientnet_encodes_real_dicom_and_pngs(image_paths, tmp_path):
    enc = get_encoder("image", "efficientnet-lite0", batch_size=2)
    paths = [str(assets.pa_radiograph_dcm()), *image_paths[:2]]
    emb = enc.encode(paths)
    assert emb.shape == (3, 1280) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert enc.dim == 1280
    enc.batch_size = 1
    one = enc.encode(paths[:2])
    np.testing.assert_allclose(one, emb[:2], rtol=1e-4, atol=1e-5)  # batching does not change results
    assert not np.allclose(emb[0], emb[1])
    assert enc.cache_key() != get_encoder("image", "efficientnet-lite0", normalisation="imagenet").cache_key()
    # a bad file in the stream raises InputError naming it
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match=r"broken\.png"):
        enc.encode([image_paths[0], str(bad)])


def test_efficientnet_rejects_wrong_checkpoint(tmp_path):
    bad = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(InputError, match=r"wrong\.pth"):
        EfficientNetLite0Encoder(weights=bad).build_model()


def _reference_input(path: str, size: int) -> torch.Tensor:
    return torch.from_numpy(resize_square(read_grayscale(path), size))[None, None]


def test_xrv_densenet_random_and_checkpoint(image_paths, tmp_path):
    import torchxrayvision as xrv

    enc = get_encoder("image", "xrv-densenet121", weights=None, size=32)
    emb = enc.encode(image_paths[:1])
    assert emb.shape == (1, 1024) and enc.dim == 1024 and np.isfinite(emb).all()

    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None).eval()
    torch.save(net, tmp_path / "full.pt")  # the pickled-module format xrv distributes
    torch.save(net.state_dict(), tmp_path / "state.pt")
    x = _reference_input(image_paths[0], 32)
    with torch.no_grad():
        ref = net.features2((2 * x - 1) * 1024).numpy()
    for f in ("full.pt", "state.pt"):
        got = get_encoder("image", "xrv-densenet121", weights=str(tmp_path / f), size=32).encode(
            image_paths[:1]
        )
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)

    with pytest.raises(InputError, match="never downloads"):
        get_encoder("image", "xrv-densenet121", weights="densenet121-res224-all", cache_dir=tmp_path).model  # noqa: B018


def test_open_clip_local_folder(image_paths, tmp_path):
    import open_clip

    cfg = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
        },
        "preprocess_cfg": {"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3]},
    }
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(1)
    ref_model = open_clip.create_model(f"local-dir:{folder}").eval()  # random init (no weights in folder yet)
    torch.save(ref_model.state_dict(), folder / "open_clip_pytorch_model.bin")

    enc = get_encoder("image", "open-clip", model=str(folder))
    emb = enc.encode(image_paths[:2])
    assert emb.shape == (2, 16) and enc.size == 32
    x = torch.cat([_reference_input(p, 32) for p in image_paths[:2]]).expand(-1, 3, -1, -1)
    with torch.no_grad():
        ref = ref_model.encode_image((x - 0.4) / 0.3).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="not in the local Hugging Face cache"):
        get_encoder("image", "open-clip", model="hf-hub:nobody/not-cached-model-xyz").model  # noqa: B018


def test_torch_module_encoder(image_paths):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    enc = get_encoder("image", "torch-module", module=net, size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    emb = enc.encode(image_paths[:3])
    x = torch.cat([_reference_input(p, 16) for p in image_paths[:3]]).expand(-1, 3, -1, -1)
    with torch.no_grad():
        ref = net((x - 0.5) / 0.25).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)
    key = enc.cache_key()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert get_encoder("image", "torch-module", module=net, size=16).cache_key() != key
    with pytest.raises(InputError):
        get_encoder("image", "torch-module", module="not a module")


# ----------------------------------------------------------------------------------------- report encoders


def test_extract_sections_mimic_style():
    text = (
        "FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n INDICATION: ___ with cough.\n"
        " FINDINGS: \n The lungs are clear.  No effusion.\n\n IMPRESSION: \n No acute process."
    )
    s = extract_sections(text)
    assert s["findings"] == "The lungs are clear. No effusion."
    assert s["impression"] == "No acute process."
    assert s["indication"] == "___ with cough."
    assert s["examination"] == "CHEST (PA AND LAT)"
    assert extract_sections("Heart is normal. Lungs clear.") == {"full": "Heart is normal. Lungs clear."}
    inline = extract_sections("Findings: mild edema. Impressions: CHF.")
    assert inline == {"findings": "mild edema.", "impression": "CHF."}
    assert (
        select_sections(text, ("findings", "impression"))
        == "The lungs are clear. No effusion. No acute process."
    )
    assert select_sections("No headers here.", ("findings",)) == "No headers here."
    assert select_sections("FINDINGS AND IMPRESSION: Normal.", ("impression",)) == "Normal."


def test_tfidf_svd_fits_and_is_deterministic():
    enc = get_encoder("report", "tfidf-svd", dim=4)
    with pytest.raises(InputError):
        enc.cache_key()
    emb = enc.fit(REPORTS).encode(REPORTS)
    assert emb.shape == (len(REPORTS), 4) and emb.dtype == np.float32 and enc.dim == 4
    again = get_encoder("report", "tfidf-svd", dim=4).encode(REPORTS)  # encode() fits when unfitted
    np.testing.assert_allclose(emb, again, atol=1e-6)
    assert enc.cache_key() == get_encoder("report", "tfidf-svd", dim=4).fit(REPORTS).cache_key()
    assert enc.cache_key() != get_encoder("report", "tfidf-svd", dim=4).fit(REPORTS[:-1]).cache_key()
    big = get_encoder("report", "tfidf-svd", dim=500).fit(REPORTS)
    assert big.dim == len(REPORTS) - 1  # clipped to what the data allows
    sec = get_encoder("report", "tfidf-svd", dim=3, sections=("impression",)).fit(REPORTS)
    # only the IMPRESSION of sectioned reports is read: its words are in, FINDINGS-only words are out
    assert "cardiomegaly" in sec.vectorizer_.vocabulary_ and "pneumonia" in sec.vectorizer_.vocabulary_
    assert "lungs" not in sec.vectorizer_.vocabulary_ and "opacity" not in sec.vectorizer_.vocabulary_
    assert sec.cache_key() != get_encoder("report", "tfidf-svd", dim=3).fit(REPORTS).cache_key()
    with pytest.raises(InputError, match="row 1"):
        enc.encode(["ok", 3])


def test_minilm_offline_and_hf_mean_pooling_agree():
    texts = ["The heart is enlarged.", "Cardiomegaly is present.", "No pneumothorax is seen."]
    mini = get_encoder("report", "minilm")
    emb = mini.encode(texts)
    assert emb.shape == (3, 384) and mini.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2]  # semantic: enlarged heart ~ cardiomegaly
    hf = get_encoder("report", "hf", model_dir=assets.minilm_model_dir(), normalize=True, max_length=256)
    np.testing.assert_allclose(hf.encode(texts), emb, atol=1e-4)
    assert hf.cache_key() != mini.cache_key()
    with pytest.raises(InputError, match="not found"):
        get_encoder("report", "hf", model_dir="/nonexistent/model").encode(["x"])


# --------------------------------------------------------------------------------------- metadata encoders

META = pd.DataFrame(
    {
        "age": [63, 40, np.nan, 70, 55],
        "sex": ["F", "M", "F", None, "M"],
        "view": ["PA", "AP", "LL", "PA", "PA"],
    }
)


def test_tabular_encoder():
    enc = get_encoder("metadata", "tabular")
    x = enc.encode(META)
    names = enc.feature_names()
    assert x.shape == (5, len(names)) == (5, enc.dim)
    age = x[:, names.index("num__age")]
    np.testing.assert_allclose([age.mean(), age.std()], [0, 1], atol=1e-5)
    np.testing.assert_array_equal(x[:, names.index("missing__missingindicator_age")], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(x[:, names.index("cat__sex_<missing>")], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(x[:, names.index("cat__view_LL")], [0, 0, 1, 0, 0])
    new = enc.encode(pd.DataFrame({"age": [50], "sex": ["X"], "view": ["PA"]}))  # unknown level -> zeros
    assert new[0, [i for i, n in enumerate(names) if n.startswith("cat__sex")]].sum() == 0
    assert enc.cache_key() != get_encoder("metadata", "tabular").fit(META.iloc[:4]).cache_key()
    assert enc.cache_key() == get_encoder("metadata", "tabular").fit(META.copy()).cache_key()
    with pytest.raises(InputError, match="'age'"):
        enc.encode(META.drop(columns="age"))
    with pytest.raises(InputError, match="DataFrame"):
        enc.encode([1, 2])


def test_sentence_metadata_encoder():
    enc = get_encoder(
        "metadata",
        "sentence",
        template="Patient age {age}, sex {sex}, view {view}.",
        text_encoder="tfidf-svd",
        text_encoder_kw={"dim": 3},
    )
    sents = enc.sentences(META)
    assert sents[0] == "Patient age 63, sex F, view PA."
    assert sents[2] == "Patient age unknown, sex F, view LL."
    assert enc.encode(META).shape == (5, 3)
    default = get_encoder("metadata", "sentence", text_encoder="tfidf-svd")
    assert default.sentences(META.rename(columns={"view": "view_position"}))[1] == (
        "Patient age 40, sex M, view position AP."
    )
    with pytest.raises(InputError, match="weight"):
        get_encoder("metadata", "sentence", template="{weight}").sentences(META)


# ------------------------------------------------------------------------------------------------- caching


def _interrupt_after(n_batches: int):
    def hook(done, total):
        hook.count += 1
        if hook.count >= n_batches:
            raise KeyboardInterrupt("simulated kill")

    hook.count = 0
    return hook


def test_encode_cached_resumes_after_interrupt_images(image_paths, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU())
    paths = [*image_paths, str(assets.pa_radiograph_dcm())]  # 7 items -> batches of 2: 4 shards
    ids = [f"case{i}" for i in range(len(paths))]
    direct = get_encoder("image", "torch-module", module=net, size=24).encode(paths)

    first = Counting(get_encoder("image", "torch-module", module=net, size=24))
    with pytest.raises(KeyboardInterrupt):
        encode_cached(first, ids, paths, tmp_path, batch_size=2, progress=False, on_batch=_interrupt_after(2))
    assert first.calls == [2, 2]
    folder = cache_folder(first, tmp_path)
    assert len(list(folder.glob("shard-*.keys.parquet"))) == 2
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

    second = Counting(get_encoder("image", "torch-module", module=net, size=24))
    out = encode_cached(second, ids, paths, tmp_path, batch_size=2, progress=False)
    assert second.calls == [2, 1]  # only the 3 missing items
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)

    third = Counting(get_encoder("image", "torch-module", module=net, size=24))
    np.testing.assert_array_equal(encode_cached(third, ids, paths, tmp_path, progress=False), out)
    assert third.calls == []
    # a changed file is recomputed (content key); a renamed copy is not
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(image_paths[0])
    fourth = Counting(get_encoder("image", "torch-module", module=net, size=24))
    out4 = encode_cached(fourth, ids, paths, tmp_path, progress=False)
    assert fourth.calls == [1] and not np.allclose(out4[0], out[0])
    np.testing.assert_array_equal(out4[1:], out[1:])


def test_encode_cached_streams_image_encoders(image_paths, tmp_path):
    """Image encoders stream all missing items through one DataLoader; shards still resume exactly."""
    torch.manual_seed(0)
    enc = get_encoder("image", "torch-module", module=nn.Conv2d(3, 4, 3), size=20, batch_size=2)
    ids = list(range(len(image_paths)))
    direct = enc.encode(image_paths)
    with pytest.raises(KeyboardInterrupt):
        encode_cached(
            enc, ids, image_paths, tmp_path, batch_size=4, progress=False, on_batch=_interrupt_after(1)
        )
    totals: list[tuple[int, int]] = []
    out = encode_cached(
        enc,
        ids,
        image_paths,
        tmp_path,
        batch_size=4,
        progress=False,
        on_batch=lambda d, t: totals.append((d, t)),
    )
    assert totals == [(2, 2)]  # 6 items, 4 cached by the interrupted run, 2 computed now
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)


def test_encode_cached_reports_fit_duplicates_and_errors(tmp_path):
    texts = pd.Series([*REPORTS, REPORTS[0]], index=range(100, 109))  # a duplicate is computed once
    ids = list(range(len(texts)))
    direct = get_encoder("report", "tfidf-svd", dim=4).encode(texts)
    first = Counting(get_encoder("report", "tfidf-svd", dim=4))
    with pytest.raises(RuntimeError):
        encode_cached(first, ids, texts, tmp_path, batch_size=3, progress=False, on_batch=_raise_runtime)
    second = Counting(get_encoder("report", "tfidf-svd", dim=4))  # fresh instance re-fits: same key
    out = encode_cached(second, ids, texts, tmp_path, batch_size=3, progress=False)
    assert first.calls == [3] and second.calls == [3, 2]
    np.testing.assert_allclose(out, direct, atol=1e-5)
    np.testing.assert_array_equal(out[-1], out[0])

    meta = Counting(get_encoder("metadata", "tabular"))
    m = encode_cached(meta, range(len(META)), META, tmp_path, progress=False)
    np.testing.assert_allclose(m, get_encoder("metadata", "tabular").encode(META), atol=1e-6)
    assert meta.calls == [5]

    with pytest.raises(InputError, match="duplicate case id"):
        encode_cached(get_encoder("report"), [1, 1], ["a b", "c d"], tmp_path, progress=False)
    with pytest.raises(InputError, match="ids"):
        encode_cached(get_encoder("report"), [1], ["a b", "c d"], tmp_path, progress=False)
    with pytest.raises(InputError, match=r"gone\.png"):
        encode_cached(
            get_encoder("image", "torch-module", module=nn.Conv2d(3, 2, 1), size=8),
            ["x"],
            [str(tmp_path / "gone.png")],
            tmp_path,
            progress=False,
        )


def _raise_runtime(done, total):
    raise RuntimeError("stop")
