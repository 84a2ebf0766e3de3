"""Geometric pipelines (albumentations 2.0.8) that keep boxes and masks aligned with the image.

``build_transform(kind, train, size)`` returns a callable implementing the Transform protocol of
:mod:`wsol.data.base`: ``(image H×W×3 uint8, boxes K×4 xyxy, mask H×W bool | None) -> (image
3×H'×W' float in [0, 1], boxes K×4 float32, mask H'×W' bool | None, to_orig)``.

Kinds:
- ``cub``: train = resize to ``resize``² (default ``round(size * 256 / 224)``, 256 for 224), random
  ``size``² crop, horizontal flip; eval = resize to ``size``² (aspect ratio not kept, as in
  wsolevaluation). Boxes are rescaled exactly in eval and ``to_orig`` = (W/size, H/size, 0, 0).
- ``cifar``: train = resize to ``size``² if needed, zero-pad 4, random ``size``² crop, flip; eval = identity.
- ``balance``: the class-balancing augmentation the ART paper (App. A) uses to extend GTSRB and
  Flowers (rotation, translation, projection; the paper gives no magnitudes, these are ours):
  train = resize to ``size``², random rotation (±15°), translation (±10 %), perspective warp
  (p = 0.5); eval = resize to ``size``².
- ``none``: identity (tensors only).

Boxes keep their count K: a box that leaves the frame becomes a zero-area box clipped to the
border (never dropped, never a crash). For train transforms ``to_orig`` covers the resize, pad and
crop; flips, rotations and warps are not representable by (sx, sy, tx, ty) and are left out.
Randomness comes from ``seed``; inside DataLoader workers each worker reseeds from its torch seed.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from wsol.data.base import ToOrig, Transform, to_tensor
from wsol.errors import ConfigError
from wsol.registry import Registry

TRANSFORMS: Registry = Registry("transform")

ROTATE_DEGREES = 15.0
TRANSLATE_FRACTION = 0.1
PERSPECTIVE_SCALE = (0.02, 0.08)


def _clip_boxes(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Clip xyxy boxes to the w×h frame, keeping x1 <= x2 and y1 <= y2."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


class AlbumentationsTransform:
    """Runs an albumentations pipeline on image, mask and boxes; see the module docstring.

    ``geometry(h, w, applied)`` returns ``to_orig`` from the input size and the applied parameters.
    """

    def __init__(self, ops: List[Any], geometry: Callable[[int, int, List[Tuple[str, Dict[str, Any]]]], ToOrig], seed: int = 0) -> None:
        import albumentations as A

        self.seed = int(seed)
        self.geometry = geometry
        self.compose = A.Compose(
            ops,
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_index"], clip=True, filter_invalid_bboxes=True),
            keypoint_params=A.KeypointParams(format="xy", label_fields=["corner_index"], remove_invisible=False),
            seed=self.seed,
            save_applied_params=True,
        )
        self._worker: Optional[Tuple[int, int]] = None

    def _reseed_for_worker(self) -> None:
        """Give every DataLoader worker its own stream (a plain seed would repeat across workers)."""
        info = torch.utils.data.get_worker_info()
        key = None if info is None else (info.id, info.seed)
        if key != self._worker:
            self._worker = key
            if info is not None:
                self.compose.set_random_seed((info.seed + self.seed) % (2**32))

    def __call__(self, image: np.ndarray, boxes: np.ndarray, mask: Optional[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], ToOrig]:
        self._reseed_for_worker()
        h, w = image.shape[:2]
        boxes = _clip_boxes(boxes, w, h)
        count = len(boxes)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)
        data: Dict[str, Any] = {
            "image": np.ascontiguousarray(image),
            "bboxes": boxes[valid].astype(np.float32).reshape(-1, 4),
            "box_index": np.nonzero(valid)[0].astype(np.int64),
            "keypoints": corners.astype(np.float32).reshape(-1, 2),
            "corner_index": np.arange(len(corners), dtype=np.int64),
        }
        if mask is not None:
            data["mask"] = np.ascontiguousarray(mask).astype(np.uint8)
        out = self.compose(**data)
        out_img = out["image"]
        oh, ow = out_img.shape[:2]
        result = np.zeros((count, 4), dtype=np.float64)
        if count:
            moved = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)[:, :2]
            order = np.asarray(out["corner_index"], dtype=np.float64).round().astype(np.int64)
            placed = np.zeros((len(corners), 2))
            placed[order] = moved
            quads = placed.reshape(count, 4, 2)
            result = _clip_boxes(np.concatenate([quads.min(1), quads.max(1)], axis=1), ow, oh)
            kept = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)
            index = np.asarray(out["box_index"], dtype=np.float64).round().astype(np.int64)
            if len(kept):
                result[index] = _clip_boxes(kept[:, :4], ow, oh)
        msk = None
        if mask is not None:
            msk = torch.from_numpy(np.ascontiguousarray(out["mask"]).astype(bool))
        to_orig = self.geometry(h, w, out.get("applied_transforms", []))
        return _image_tensor(out_img), torch.as_tensor(result, dtype=torch.float32), msk, to_orig


class ResizeTransform:
    """Deterministic resize to size×size; boxes scale exactly and ``to_orig`` inverts it exactly."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, mask: Optional[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], ToOrig]:
        import cv2

        h, w = image.shape[:2]
        s = self.size
        if (h, w) == (s, s):
            resized = image
        else:
            resized = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA if (h >= s and w >= s) else cv2.INTER_LINEAR)
        fx, fy = s / w, s / h
        out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * np.array([fx, fy, fx, fy])
        msk = None
        if mask is not None:
            m = np.ascontiguousarray(mask).astype(np.uint8)
            if (h, w) != (s, s):
                m = cv2.resize(m, (s, s), interpolation=cv2.INTER_NEAREST_EXACT)
            msk = torch.from_numpy(m.astype(bool))
        return _image_tensor(resized), torch.as_tensor(out, dtype=torch.float32), msk, (w / s, h / s, 0.0, 0.0)


def _crop_offset(applied: List[Tuple[str, Dict[str, Any]]]) -> Tuple[float, float]:
    """(x_min, y_min) of the first crop in the applied-parameter list."""
    for name, params in applied:
        coords = params.get("crop_coords") if isinstance(params, dict) else None
        if coords is not None:
            return float(coords[0]), float(coords[1])
    return 0.0, 0.0


def _resize_pad_crop_geometry(resized: int, pad: Optional[int], h: int, w: int, applied: List[Tuple[str, Dict[str, Any]]]) -> ToOrig:
    """``to_orig`` of resize to resized², zero-pad by ``pad``, then crop (``pad=None``: no crop)."""
    sx, sy = w / resized, h / resized
    if pad is None:
        return (sx, sy, 0.0, 0.0)
    x0, y0 = _crop_offset(applied)
    return (sx, sy, (x0 - pad) * sx, (y0 - pad) * sy)


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"transform size must be a positive integer, got {size!r}")
    return int(size)


@TRANSFORMS.register("none")
def _none(train: bool, size: int, seed: int = 0) -> Transform:
    """No augmentation. It is built only where a run sets ``image_size`` (without one, images go in at their size on
    disk and no transform is built), so it resizes to that size, train and eval alike."""
    return ResizeTransform(_check_size(size))


@TRANSFORMS.register("cub")
def _cub(train: bool, size: int, seed: int = 0, resize: Optional[int] = None) -> Transform:
    import albumentations as A
    import cv2

    size = _check_size(size)
    if not train:
        return ResizeTransform(size)
    rs = int(resize) if resize is not None else int(round(size * 256 / 224))
    if rs < size:
        raise ConfigError(f"transform option resize={rs} must be >= size={size} for the 'cub' random crop")

    geometry = partial(_resize_pad_crop_geometry, rs, 0)
    ops = [
        A.Resize(rs, rs, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT, area_for_downscale="image"),
        A.RandomCrop(size, size),
        A.HorizontalFlip(p=0.5),
    ]
    return AlbumentationsTransform(ops, geometry, seed)


@TRANSFORMS.register("cifar")
def _cifar(train: bool, size: int, seed: int = 0, padding: int = 4) -> Transform:
    import albumentations as A
    import cv2

    size = _check_size(size)
    if not train:
        return to_tensor
    pad = int(padding)

    geometry = partial(_resize_pad_crop_geometry, size, pad)
    ops = [
        A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT, area_for_downscale="image"),
        A.Pad(padding=pad, fill=0, fill_mask=0, border_mode=cv2.BORDER_CONSTANT),
        A.RandomCrop(size, size),
        A.HorizontalFlip(p=0.5),
    ]
    return AlbumentationsTransform(ops, geometry, seed)


@TRANSFORMS.register("balance")
def _balance(
    train: bool,
    size: int,
    seed: int = 0,
    rotate: float = ROTATE_DEGREES,
    translate: float = TRANSLATE_FRACTION,
    perspective: Tuple[float, float] = PERSPECTIVE_SCALE,
) -> Transform:
    import albumentations as A
    import cv2

    size = _check_size(size)
    if not train:
        return ResizeTransform(size)

    geometry = partial(_resize_pad_crop_geometry, size, None)
    ops = [
        A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT, area_for_downscale="image"),
        A.Affine(
            rotate=(-float(rotate), float(rotate)),
            translate_percent=(-float(translate), float(translate)),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=1.0,
        ),
        A.Perspective(scale=tuple(float(v) for v in perspective), keep_size=True, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
    ]
    return AlbumentationsTransform(ops, geometry, seed)


def build_transform(kind: str, train: bool, size: int, **opts: Any) -> Transform:
    """The ``kind`` pipeline ('cub', 'cifar', 'balance', 'none') for training or evaluation at ``size``.

    Options: ``seed`` (all kinds), ``resize`` ('cub'), ``padding`` ('cifar'), ``rotate``,
    ``translate``, ``perspective`` ('balance'). An unknown kind or option is a ConfigError.
    """
    import inspect

    factory = TRANSFORMS.get(kind)
    accepted = set(inspect.signature(factory).parameters) - {"train", "size"}
    unknown = sorted(set(opts) - accepted)
    if unknown:
        raise ConfigError(f"transform {kind!r} has no option {unknown[0]!r}; it takes: {', '.join(sorted(accepted))}")
    return factory(train=bool(train), size=size, **opts)


def transform_names() -> List[str]:
    """The transform kinds ``build_transform`` accepts."""
    return TRANSFORMS.names()


__all__ = ["build_transform", "transform_names", "AlbumentationsTransform", "ResizeTransform", "TRANSFORMS"]
