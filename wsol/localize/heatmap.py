"""Attribution-map post-processing: pure functions on batched torch tensors.

Every function takes maps shaped N×H×W (``to_gray`` also takes N×C×H×W before the channel
reduction) and returns a new tensor; nothing is modified in place and nothing leaves the maps'
device. Compose them directly or through :func:`postprocess` / :class:`PostProcess`, whose
step names are what configs use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from wsol.errors import ConfigError

Size = Union[int, Tuple[int, int]]

#: The default chain of the design document: gray → per-image min-max → 3×3 mean filter.
DEFAULT_STEPS: Tuple[str, ...] = ("gray", "minmax", "mean3")

#: Named step chains. ``art_grad`` follows the official ART gradient-map code for CUB (batch
#: min-max, per-image percentile clip, 3×3 mean, Gaussian σ); its cubehelix-colormap-then-gray
#: quirk before box fitting is deliberately not reproduced.
PRESETS: Dict[str, Tuple[str, ...]] = {
    "wsol": DEFAULT_STEPS,
    "wsolevaluation": ("gray", "resize", "minmax"),
    "art_grad": ("gray", "minmax_batch", "pclip", "mean3", "gauss"),
}


def _check_maps(maps: torch.Tensor, name: str = "maps") -> None:
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.dim() != 3:
        raise ValueError(f"{name} must be N×H×W, got shape {tuple(maps.shape)}")


def to_gray(maps: torch.Tensor, absolute: bool = True) -> torch.Tensor:
    """Reduce N×C×H×W attributions to N×H×W by the channel mean of ``|maps|``.

    ``absolute=False`` takes the plain channel mean (signed maps such as CAM). An N×H×W input is
    already gray and is returned unchanged (no absolute value is taken), so CAM-style signed maps
    pass through untouched.
    """
    if maps.dim() == 3:
        return maps
    if maps.dim() != 4:
        raise ValueError(f"maps must be N×C×H×W or N×H×W, got shape {tuple(maps.shape)}")
    return (maps.abs() if absolute else maps).mean(dim=1)


def normalize_minmax(maps: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Rescale to [0, 1] by ``(m - min) / (max - min)`` over the finite values.

    ``per_image=False`` uses one min and max over the whole batch (the ART code's first step).
    Non-finite values never spread: +inf becomes 1 and -inf becomes 0 (the strongest and weakest
    pixels), so one overflowing attribution value cannot abort a run. A map that holds a NaN, or
    whose finite values are constant, gets 0 at every finite pixel, as in wsolevaluation, so that
    downstream thresholding sees no foreground instead of garbage.
    """
    _check_maps(maps)
    x = maps.float() if not maps.is_floating_point() else maps
    n = x.shape[0]
    flat = x.reshape(n, -1)
    if not per_image:
        flat = flat.reshape(1, -1)
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.full_like(flat, float("inf"))).amin(dim=1, keepdim=True)
    hi = torch.where(finite, flat, torch.full_like(flat, float("-inf"))).amax(dim=1, keepdim=True)
    span = hi - lo
    bad = torch.isnan(flat).any(dim=1, keepdim=True) | ~(span > 0)
    out = (flat - lo) / torch.where(bad, torch.ones_like(span), span)
    out = torch.where(bad | ~finite, torch.zeros_like(out), out)
    out = torch.where(flat == float("inf"), torch.ones_like(out), out)
    return out.reshape(x.shape)


def _row_percentile(flat: torch.Tensor, p: float) -> torch.Tensor:
    """Per-row percentile with linear interpolation (numpy's default), N×1; no size limit."""
    srt = flat.sort(dim=1).values
    pos = (p / 100.0) * (flat.shape[1] - 1)
    lo, hi = int(pos // 1), min(int(pos // 1) + 1, flat.shape[1] - 1)
    frac = pos - lo
    return (srt[:, lo] + frac * (srt[:, hi] - srt[:, lo])).unsqueeze(1)


def percentile_clip(maps: torch.Tensor, low: float = 2.0, high: float = 98.0) -> torch.Tensor:
    """Per image: standardize, clip to the ``low``–``high`` percentiles, then min-max to [0, 1].

    This is the official ART CUB variant. Percentiles use linear interpolation (numpy's default).
    Constant maps become zeros.
    """
    _check_maps(maps)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    x = maps.float() if not maps.is_floating_point() else maps
    n = x.shape[0]
    flat = x.reshape(n, -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True)
    z = (flat - mean) / torch.where(std > 0, std, torch.ones_like(std))
    lo_q, hi_q = _row_percentile(z, low), _row_percentile(z, high)
    z = torch.minimum(torch.maximum(z, lo_q), hi_q)
    z = torch.where(std > 0, z, torch.zeros_like(z))
    return normalize_minmax(z.reshape(x.shape), per_image=True)


def mean_filter(maps: torch.Tensor, k: int = 3) -> torch.Tensor:
    """k×k box filter, identical to a Conv2d with weights 1/k² and zero padding k//2.

    Border behaviour: pixels outside the image count as 0 (the divisor stays k²), so values
    within k//2 of the border shrink toward 0. This is what a ``padding=1`` convolution does,
    and unlike ``cv2.blur`` (which reflects the border).
    """
    _check_maps(maps)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"k must be a positive odd integer, got {k}")
    if k == 1:
        return maps
    x = maps.unsqueeze(1)
    x = x.float() if not x.is_floating_point() else x
    return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=True).squeeze(1)


def _reflect_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis padded by ``radius`` in scipy's 'reflect' (d c b a | a b c d) mode."""
    i = torch.arange(-radius, n + radius, device=device)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def gaussian_filter(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian filter of N×H×W maps matching ``scipy.ndimage.gaussian_filter(mode='reflect')``.

    Named after scipy's filter; :func:`wsol.attribution.integrated.gaussian_blur` is the other
    meaning (N×C×H×W images, radius 3σ, replicated borders, the blur-IG baseline).

    Same kernel (radius ``int(truncate * sigma + 0.5)``, normalized weights) and the same
    half-sample symmetric border; results agree with scipy to float32 rounding.
    """
    _check_maps(maps)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return maps
    x = maps.float() if not maps.is_floating_point() else maps
    radius = int(truncate * float(sigma) + 0.5)
    offs = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    w = torch.exp(-0.5 * (offs / float(sigma)) ** 2)
    w = (w / w.sum()).to(x.dtype)
    n, h, wd = x.shape
    rows = x.index_select(1, _reflect_index(h, radius, x.device))  # N×(H+2r)×W
    rows = F.conv2d(rows.unsqueeze(1), w.view(1, 1, -1, 1)).squeeze(1)
    cols = rows.index_select(2, _reflect_index(wd, radius, x.device))
    return F.conv2d(cols.unsqueeze(1), w.view(1, 1, 1, -1)).squeeze(1)


def resize_maps(maps: torch.Tensor, size: Size, mode: str = "bicubic") -> torch.Tensor:
    """Resize N×H×W maps to ``size`` (int or (h, w)) with pixel-centre alignment.

    ``align_corners=False`` is the cv2.resize convention. Bicubic can overshoot the input range,
    so normalize after resizing (wsolevaluation resizes, then min-maxes).
    """
    _check_maps(maps)
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if tuple(maps.shape[-2:]) == hw:
        return maps
    x = maps.unsqueeze(1)
    x = x.float() if not x.is_floating_point() else x
    kwargs = {} if mode in ("nearest", "area") else {"align_corners": False}
    return F.interpolate(x, size=hw, mode=mode, **kwargs).squeeze(1)


@dataclass(frozen=True)
class PostProcess:
    """A named chain of post-processing steps with its parameters; call it on maps.

    Step names: ``gray`` (channel mean of abs), ``gray_signed``, ``relu``, ``resize`` (needs
    ``size``), ``minmax``, ``minmax_batch``, ``pclip`` (``low``/``high``), ``mean3`` (or
    ``meanK`` for any odd K), ``gauss`` (``sigma``).
    """

    steps: Tuple[str, ...] = DEFAULT_STEPS
    size: Optional[Size] = None
    sigma: float = 3.0
    low: float = 2.0
    high: float = 98.0
    resize_mode: str = "bicubic"

    def __post_init__(self) -> None:
        steps = PRESETS[self.steps] if isinstance(self.steps, str) and self.steps in PRESETS else self.steps
        if isinstance(steps, str):
            raise ConfigError(f"unknown post-processing preset {steps!r}; choose one of {sorted(PRESETS)}")
        object.__setattr__(self, "steps", tuple(steps))
        for step in self.steps:
            self._fn(step)
        if "resize" in self.steps and self.size is None:
            raise ConfigError("post-processing step 'resize' needs a size; set size to an int or (height, width)")

    def _fn(self, step: str) -> Callable[[torch.Tensor], torch.Tensor]:
        table: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "gray": lambda m: to_gray(m, absolute=True),
            "gray_signed": lambda m: to_gray(m, absolute=False),
            "relu": lambda m: m.clamp(min=0),
            "resize": lambda m: resize_maps(m, self.size, self.resize_mode),  # type: ignore[arg-type]
            "minmax": lambda m: normalize_minmax(m, per_image=True),
            "minmax_batch": lambda m: normalize_minmax(m, per_image=False),
            "pclip": lambda m: percentile_clip(m, self.low, self.high),
            "gauss": lambda m: gaussian_filter(m, self.sigma),
        }
        if step in table:
            return table[step]
        if step.startswith("mean") and step[4:].isdigit() and int(step[4:]) % 2 == 1:
            k = int(step[4:])
            return lambda m: mean_filter(m, k)
        names = sorted(table) + ["mean3", "meanK (odd K)"]
        raise ConfigError(f"unknown post-processing step {step!r}; choose from {', '.join(names)}")

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        out = maps
        for step in self.steps:
            if out.dim() == 4 and step not in ("gray", "gray_signed"):
                raise ValueError(f"step {step!r} needs N×H×W maps; put 'gray' first for N×C×H×W input")
            out = self._fn(step)(out)
        return out


def postprocess(
    maps: torch.Tensor,
    steps: Union[str, Sequence[str]] = DEFAULT_STEPS,
    *,
    size: Optional[Size] = None,
    sigma: float = 3.0,
    low: float = 2.0,
    high: float = 98.0,
) -> torch.Tensor:
    """Run ``steps`` (names or a preset name from :data:`PRESETS`) on ``maps``; see :class:`PostProcess`."""
    return PostProcess(tuple(steps) if not isinstance(steps, str) else steps, size=size, sigma=sigma, low=low, high=high)(maps)  # type: ignore[arg-type]
