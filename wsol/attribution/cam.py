"""Class activation maps: CAM (Zhou et al. 2016), Grad-CAM (Selvaraju et al. 2017), Grad-CAM++.

All three read the last feature map through ``model.forward_features`` and the logits through
``model.forward_head``; no hooks are registered, so they compose with ``create_graph`` and
never leave state behind. Maps are N×H×W, upsampled bilinearly (align_corners=False) from the
feature resolution to the input's size unless ``upsample=False``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attribution.common import Target, as_target, check_images, finish, objective_value

GRADCAM_PP_EPS = 1e-6


def upsample_maps(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of N×h×w maps to N×H×W."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def class_activation_map(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    relu: bool = False,
    upsample: bool = True,
    create_graph: bool = False,
) -> torch.Tensor:
    """CAM_t = Σ_c w_{t,c} F_c: the target's head weights times the last feature map, N×H×W.

    For a global-average-pooling + linear head, the spatial mean of CAM_t plus the bias is the
    logit z_t. The official ART code takes the mean over channels of w_{t,c} F_c (this sum
    divided by C: the same map after min-max normalization); wsolevaluation applies no ReLU.
    The raw map is kept by default; ``relu=True`` clips it at zero. ``target=None`` uses the
    predicted class. With ``create_graph`` the map stays differentiable (it is a plain product).
    """
    check_images(x)
    t = as_target(target, x.shape[0], x.device)
    with torch.set_grad_enabled(create_graph):
        feats = model.forward_features(x if create_graph else x.detach())
        if t is None:
            t = model.forward_head(feats).argmax(dim=1)
        maps = torch.einsum("nc,nchw->nhw", model.classifier_weight[t].to(feats.dtype), feats)
    return _finish_cam(maps, x, relu, upsample, create_graph)


def _features_and_gradients(
    model: nn.Module, x: torch.Tensor, target: Target, create_graph: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Last feature map A and ∂(Σ_i z_{i,t_i})/∂A, computed with autograd.grad (no hooks)."""
    t = as_target(target, x.shape[0], x.device)
    with torch.enable_grad():
        if create_graph:
            feats = model.forward_features(x)
            if not feats.requires_grad:
                feats.requires_grad_(True)
        else:
            with torch.no_grad():
                feats = model.forward_features(x.detach())
            feats = feats.detach().requires_grad_(True)
        logits = model.forward_head(feats)
        if t is None:
            t = logits.detach().argmax(dim=1)
        value = objective_value(logits, t, "logit")
        (grads,) = torch.autograd.grad(value, feats, create_graph=create_graph)
    return feats, grads


def _finish_cam(maps: torch.Tensor, x: torch.Tensor, relu: bool, upsample: bool, create_graph: bool) -> torch.Tensor:
    """Optional ReLU at feature resolution, optional upsampling to the image, then :func:`finish`."""
    if relu:
        maps = F.relu(maps)
    if upsample:
        maps = upsample_maps(maps, tuple(x.shape[-2:]))
    return finish(maps, create_graph)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    relu: bool = True,
    upsample: bool = True,
    create_graph: bool = False,
) -> torch.Tensor:
    """Grad-CAM: ReLU(Σ_c α_c A_c) with α_c the spatial mean of ∂z_t/∂A_c, N×H×W.

    A is ``model.forward_features(x)``, the output of ``model.feature_layer`` (the layer
    pytorch-grad-cam would hook). The ReLU follows the paper and pytorch-grad-cam; it is applied
    at feature resolution, before upsampling. ``target=None`` uses the predicted class.
    """
    check_images(x)
    feats, grads = _features_and_gradients(model, x, target, create_graph)
    with torch.set_grad_enabled(create_graph):
        maps = (grads.mean(dim=(2, 3), keepdim=True) * feats).sum(dim=1)
        return _finish_cam(maps, x, relu, upsample, create_graph)


def grad_cam_plus_plus(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    relu: bool = True,
    upsample: bool = True,
    create_graph: bool = False,
) -> torch.Tensor:
    """Grad-CAM++: ReLU(Σ_c w_c A_c), N×H×W, with the closed-form weights of its eq. 19.

    With g = ∂z_t/∂A: a = g² / (2g² + (Σ_hw A)·g³ + 1e-6), set to 0 where g = 0, and
    w_c = Σ_hw ReLU(g)·a — the exponential-free form that pytorch-grad-cam implements.
    """
    check_images(x)
    feats, grads = _features_and_gradients(model, x, target, create_graph)
    with torch.set_grad_enabled(create_graph):
        g2 = grads * grads
        g3 = g2 * grads
        total = feats.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + total * g3 + GRADCAM_PP_EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (F.relu(grads) * alpha).sum(dim=(2, 3), keepdim=True)
        maps = (weights * feats).sum(dim=1)
        return _finish_cam(maps, x, relu, upsample, create_graph)
