"""Attribution maps for a wsol Classifier, all differentiable on request (``create_graph``).

``attribute(model, x, target, method, **opts)`` dispatches on the user-selectable names of
:data:`ATTRIBUTIONS`:

========== ======================================= ==========================
name       function                                output
========== ======================================= ==========================
grad       :func:`input_gradient`                  N×C×H×W
smoothgrad :func:`smoothgrad`                      N×C×H×W
ig         :func:`integrated_gradients`            N×C×H×W
gradshap   :func:`gradient_shap`                   N×C×H×W
cam        :func:`class_activation_map`            N×H×W
gradcam    :func:`grad_cam`                        N×H×W
gradcampp  :func:`grad_cam_plus_plus`              N×H×W
========== ======================================= ==========================

Inputs are [0, 1] images; ``target`` is an N-long LongTensor of classes, or None for the
predicted class. Gradient-family maps keep the channels (``reduce="mean_abs"`` or "sum_abs"
collapses them); CAM-family maps are upsampled to the input's size.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn as nn

from wsol.attribution.cam import class_activation_map, grad_cam, grad_cam_plus_plus, upsample_maps
from wsol.attribution.common import Target, reduce_channels
from wsol.attribution.gradient import input_gradient, smoothgrad
from wsol.attribution.integrated import (
    draw_shap_samples,
    gaussian_blur,
    gradient_shap,
    gradient_shap_from_draws,
    integrated_gradients,
    make_baseline,
    quadrature,
)
from wsol.errors import ConfigError
from wsol.registry import Registry

ATTRIBUTIONS: Registry = Registry("attribution")
for _name, _fn in (
    ("grad", input_gradient),
    ("smoothgrad", smoothgrad),
    ("ig", integrated_gradients),
    ("gradshap", gradient_shap),
    ("cam", class_activation_map),
    ("gradcam", grad_cam),
    ("gradcampp", grad_cam_plus_plus),
):
    ATTRIBUTIONS.register(_name)(_fn)

_FIXED = ("model", "x", "target", "create_graph")


def method_options(method: str) -> list[str]:
    """The keyword options ``attribute`` accepts for ``method`` (besides ``create_graph``)."""
    params = inspect.signature(ATTRIBUTIONS.get(method)).parameters
    return [p for p in params if p not in _FIXED]


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    method: str,
    create_graph: bool = False,
    **opts: Any,
) -> torch.Tensor:
    """Attribution maps of ``method`` for images ``x`` (N×C×H×W in [0, 1]) and classes ``target``.

    Unknown method names raise :class:`~wsol.errors.UnknownNameError`; options the method does
    not take raise :class:`~wsol.errors.ConfigError`. ``reduce`` is accepted by every method:
    it collapses the channels of gradient-family maps and is ignored by CAM-family maps, which
    have none.
    """
    fn: Callable[..., torch.Tensor] = ATTRIBUTIONS.get(method)
    reduce = opts.pop("reduce", None)
    allowed = method_options(method)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(f"attribution {method!r} has no option {unknown[0]!r}; it takes: {', '.join(allowed)}")
    maps = fn(model, x, target, create_graph=create_graph, **opts)
    return reduce_channels(maps, reduce) if maps.dim() == 4 else maps


__all__ = [
    "ATTRIBUTIONS",
    "attribute",
    "method_options",
    "input_gradient",
    "smoothgrad",
    "integrated_gradients",
    "gradient_shap",
    "gradient_shap_from_draws",
    "draw_shap_samples",
    "make_baseline",
    "gaussian_blur",
    "quadrature",
    "class_activation_map",
    "grad_cam",
    "grad_cam_plus_plus",
    "upsample_maps",
]
