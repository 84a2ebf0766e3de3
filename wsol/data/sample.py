"""The one record every dataset returns, and the batch collate for it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Sized, Tuple

import torch


def has_box(boxes: Sized) -> bool:
    """Whether an image enters the box metrics (GT-Known / Top-1 Loc, MaxBoxAccV2, COCO box AP): it has a ground-truth
    box, its own or its mask's. The one rule for partially annotated sets (Flowers: a mask, hence a box, for some images
    only), whose other images count in Top-1 Acc alone rather than as misses."""
    return len(boxes) > 0


def has_mask(mask: Optional[Any]) -> bool:
    """Whether an image enters the mask metrics (Top-1 Seg, mIoU, PxAP, COCO mask AP): it has a ground-truth mask
    (an empty one too: a set whose loader gives every image a mask scores every image)."""
    return mask is not None


@dataclass
class Sample:
    """One image with its weak and (for evaluation) strong labels.

    image: float32 C×H×W in [0, 1]. label: class index. boxes: K×4 float ``xyxy`` pixels in the
    *current* image frame (x2/y2 exclusive), K may be 0. mask: H×W bool foreground, or None.
    image_id: stable integer id (COCO ``image_id``). name: the file's path relative to the root.
    orig_size: (height, width) of the image on disk, before any transform. to_orig: (sx, sy, tx, ty)
    so that ``x_orig = x * sx + tx`` and ``y_orig = y * sy + ty`` map the current frame back to the
    original image (identity when no geometric transform was applied).
    """

    image: torch.Tensor
    label: int
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    mask: Optional[torch.Tensor] = None
    image_id: int = 0
    name: str = ""
    orig_size: Tuple[int, int] = (0, 0)
    to_orig: Tuple[float, float, float, float] = (1.0, 1.0, 0.0, 0.0)


@dataclass
class Batch:
    """A collated list of samples; boxes stay a list because counts differ per image.

    ``masks`` is N×H×W when some sample has a mask (all-False rows for those without one), else None; ``masked``
    (N bools) says which rows are ground truth (:func:`has_mask`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: List[torch.Tensor]
    masks: Optional[torch.Tensor]
    image_ids: torch.Tensor
    names: List[str]
    orig_sizes: List[Tuple[int, int]]
    to_orig: torch.Tensor
    masked: Optional[torch.Tensor] = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Move the tensors a model needs to ``device``."""
        return Batch(
            images=self.images.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            boxes=self.boxes,
            masks=self.masks,
            image_ids=self.image_ids,
            names=self.names,
            orig_sizes=self.orig_sizes,
            to_orig=self.to_orig,
            masked=self.masked,
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples into a Batch; masks are stacked when some sample has one, an all-False mask standing in for
    each sample without one (``Batch.masked`` tells them apart)."""
    masked = torch.tensor([has_mask(s.mask) for s in samples], dtype=torch.bool)
    masks = None
    if bool(masked.any()):
        ref = next(s.mask for s in samples if s.mask is not None)
        masks = torch.stack([s.mask if s.mask is not None else torch.zeros_like(ref) for s in samples])
    return Batch(
        images=torch.stack([s.image for s in samples]),
        labels=torch.tensor([s.label for s in samples], dtype=torch.long),
        boxes=[s.boxes for s in samples],
        masks=masks,
        image_ids=torch.tensor([s.image_id for s in samples], dtype=torch.long),
        names=[s.name for s in samples],
        orig_sizes=[s.orig_size for s in samples],
        to_orig=torch.tensor([s.to_orig for s in samples], dtype=torch.float64),
        masked=masked,
    )


def boxes_to_original(boxes: torch.Tensor, to_orig: Sequence[float]) -> torch.Tensor:
    """Map K×4 xyxy boxes from the transformed frame back to original-image pixels."""
    sx, sy, tx, ty = (float(v) for v in to_orig)
    scale = boxes.new_tensor([sx, sy, sx, sy])
    shift = boxes.new_tensor([tx, ty, tx, ty])
    return boxes * scale + shift


Meta = Dict[str, Any]
