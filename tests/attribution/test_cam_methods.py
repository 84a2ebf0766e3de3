"""CAM, Grad-CAM and Grad-CAM++ against pytorch-grad-cam and against closed forms."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from wsol.attribution import class_activation_map, grad_cam, grad_cam_plus_plus, upsample_maps
from wsol.models import build_model


def _setup(arch: str = "small-cnn", n: int = 3, size: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(arch, 4, input_size=size).double().eval()
    x = torch.rand(n, 3, size, size, dtype=torch.float64)
    target = torch.arange(n) % 4
    return model, x, target


def _gradcam_scale(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's per-image scaling: (m − min) / (1e-7 + max of the shifted map)."""
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return maps / (1e-7 + maps.amax(dim=(1, 2), keepdim=True))


@pytest.mark.parametrize("arch", ["small-cnn", "wrn-16-2"])
@pytest.mark.parametrize("ours,theirs", [(grad_cam, GradCAM), (grad_cam_plus_plus, GradCAMPlusPlus)])
def test_matches_pytorch_grad_cam(arch, ours, theirs) -> None:
    # pytorch-grad-cam hooks model.feature_layer, applies ReLU at feature resolution, scales
    # each map to [0, 1], resizes it with cv2 and scales again. We apply the same scaling to our
    # feature-resolution map and resize it with our own bilinear upsampling, so the test covers
    # the channel weights, the ReLU and the upsampling; the residue is float32 rounding.
    model, x, target = _setup(arch)
    with theirs(model, target_layers=[model.feature_layer]) as cam:
        expected = cam(x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    feature_maps = ours(model, x, target, upsample=False)
    assert feature_maps.shape == (3, 4, 4)
    mapped = _gradcam_scale(upsample_maps(_gradcam_scale(feature_maps).float(), (16, 16)))
    np.testing.assert_allclose(mapped.numpy(), expected, atol=1e-6)
    full = ours(model, x, target)
    torch.testing.assert_close(full, upsample_maps(feature_maps, (16, 16)))


def test_upsampling_matches_cv2_bilinear() -> None:
    maps = torch.rand(2, 4, 5)
    ours = upsample_maps(maps, (16, 20)).numpy()
    for i in range(2):
        expected = cv2.resize(maps[i].numpy(), (20, 16), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(ours[i], expected, atol=1e-6)


@pytest.mark.parametrize("arch", ["small-cnn", "wrn-16-2"])
def test_cam_spatial_mean_plus_bias_is_the_logit(arch: str) -> None:
    model, x, target = _setup(arch)
    cam = class_activation_map(model, x, target, upsample=False)
    bias = model.net.get_classifier().bias[target]
    logits = model(x).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + bias, logits.detach())
    # the same map, written out by hand from the features and the head weights
    feats = model.forward_features(x)
    manual = (model.classifier_weight[target][:, :, None, None] * feats).sum(1)
    torch.testing.assert_close(cam, manual.detach())
    assert float(cam.min()) < 0, "random features should give some negative CAM values (no ReLU by default)"
    torch.testing.assert_close(class_activation_map(model, x, target, relu=True, upsample=False), cam.clamp_min(0))


def test_gradcam_of_a_gap_linear_head_is_relu_cam_over_area() -> None:
    # For logits = W·mean_hw(A) + b, ∂z_t/∂A_c = w_tc / (h·w) everywhere, so Grad-CAM = ReLU(CAM)/(h·w).
    model, x, target = _setup()
    cam = class_activation_map(model, x, target, upsample=False)
    gc = grad_cam(model, x, target, upsample=False)
    torch.testing.assert_close(gc, F.relu(cam) / cam[0].numel())


def test_target_none_uses_prediction_and_maps_have_input_size() -> None:
    torch.manual_seed(1)
    model = build_model("small-cnn", 4, input_size=16).double().eval()
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    pred = model(x).argmax(1)
    for fn in (class_activation_map, grad_cam, grad_cam_plus_plus):
        out = fn(model, x, None)
        assert out.shape == (2, 16, 20)
        torch.testing.assert_close(out, fn(model, x, pred))
