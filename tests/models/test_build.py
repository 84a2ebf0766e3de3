"""Model zoo: native-size forward shapes, normalization inside, local weight loading."""
from __future__ import annotations

import pytest
import torch

from wsol.errors import CheckpointError, UnknownNameError
from wsol.models import MODELS, build_model, load_model, save_model
from wsol.models.build import arch_spec
from wsol.models.classifier import GapNet
from wsol.models.vgg_gap import SmallCNN
from wsol.models.wrn import PreActResNet18, WideResNet

FAST_ARCHS = ["small-cnn", "small-cnn-bn", "wrn-16-2", "wrn-28-10", "wrn-40-2", "wrn-34-10", "preact-resnet18", "vgg16-gap", "resnet50"]


@pytest.mark.parametrize("arch", FAST_ARCHS + ["wrn-70-16"])
def test_forward_shapes_at_native_size(arch: str) -> None:
    model = build_model(arch, 7).eval()
    size = arch_spec(arch).input_size
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
    assert logits.shape == (1, 7)
    assert feats.ndim == 4 and feats.shape[1] == model.classifier_weight.shape[1]
    assert model.classifier_weight.shape[0] == 7
    torch.testing.assert_close(model(x), logits)


def test_every_registered_arch_is_covered() -> None:
    assert set(MODELS.names()) >= set(FAST_ARCHS)


def test_feature_layer_output_is_the_feature_map() -> None:
    model = build_model("wrn-16-2", 3).eval()
    seen = {}
    handle = model.feature_layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
    handle.remove()
    torch.testing.assert_close(seen["out"], feats)


def test_normalization_happens_inside_the_model() -> None:
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)
    model = build_model("small-cnn", 3, mean=mean, std=std).eval()
    x = torch.rand(2, 3, 16, 16)
    expected_input = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = model.net(expected_input)
        wrapped = model(x)
    torch.testing.assert_close(wrapped, direct)


def test_unknown_arch_is_a_user_error() -> None:
    with pytest.raises(UnknownNameError, match="resnet50"):
        build_model("resnet51", 3)


def test_wsol_checkpoint_round_trip(tmp_path) -> None:
    model = build_model("wrn-16-2", 5, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1)).eval()
    path = save_model(model, tmp_path / "model", dataset="cifar10", epoch=3)
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    loaded = load_model(path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    again = build_model("wrn-16-2", 5, weights=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_wrong_architecture_names_mismatched_keys(tmp_path) -> None:
    path = save_model(build_model("wrn-16-2", 5), tmp_path / "m")
    with pytest.raises(CheckpointError, match="wrn-16-2"):
        build_model("wrn-16-4", 5, weights=path)
    bare = tmp_path / "bare.pth"
    torch.save(build_model("wrn-16-2", 5).net.state_dict(), bare)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        build_model("wrn-16-4", 5, weights=bare)


def test_imagenet_backbone_checkpoint_reinitializes_the_head(tmp_path) -> None:
    imagenet = build_model("wrn-16-2", 1000).net
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in imagenet.state_dict().items()}}, path)
    model = build_model("wrn-16-2", 10, weights=path)
    torch.testing.assert_close(model.net.conv1.weight, imagenet.conv1.weight)
    assert model.net.fc.weight.shape == (10, imagenet.fc.weight.shape[1])
    same_classes = build_model("wrn-16-2", 1000, weights=path)
    torch.testing.assert_close(same_classes.net.fc.weight, imagenet.fc.weight)


def test_vgg_gap_loads_torchvision_vgg16_features(tmp_path) -> None:
    import torchvision

    tv = torchvision.models.vgg16(weights=None)
    path = tmp_path / "vgg16.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    model = build_model("vgg16-gap", 200, weights=path)
    torch.testing.assert_close(model.net.features[28].weight, tv.features[28].weight)


def test_resnet50_loads_timm_layout_backbone(tmp_path) -> None:
    import timm

    reference = timm.create_model("resnet50", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet50.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_model("resnet50", 200, weights=path)
    torch.testing.assert_close(model.net.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    assert model.net.fc.out_features == 200


def test_missing_weights_file_names_it(tmp_path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        build_model("small-cnn", 3, weights=missing)


@pytest.mark.parametrize("make", [lambda: SmallCNN(3, width=4), lambda: WideResNet(16, 1, 3), lambda: PreActResNet18(3)])
def test_in_house_backbones_share_the_gap_head(make) -> None:
    torch.manual_seed(0)
    net = make().eval()
    assert isinstance(net, GapNet) and net.get_classifier() is net.fc
    x = torch.rand(2, 3, 16, 16)
    feats = net.forward_features(x)
    expected = feats.mean(dim=(2, 3)) @ net.fc.weight.T + net.fc.bias
    assert torch.allclose(net(x), expected, atol=1e-5)
