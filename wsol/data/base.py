"""Shared pieces of every loader: image reading, the transform protocol, a record-list dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from wsol.data.sample import Sample
from wsol.errors import DataError

ToOrig = Tuple[float, float, float, float]
Transform = Callable[
    [np.ndarray, np.ndarray, Optional[np.ndarray]],
    Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], ToOrig],
]
"""A transform takes (image H×W×3 uint8, boxes K×4 float xyxy, mask H×W bool or None) and returns
(image C×H'×W' float32 in [0,1], boxes K'×4 float32 xyxy, mask H'×W' bool or None, to_orig)."""


def to_tensor(image: np.ndarray, boxes: np.ndarray, mask: Optional[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], ToOrig]:
    """The identity transform: convert to tensors without any geometric change."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    box = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    msk = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask).astype(bool))
    return img, box, msk, (1.0, 1.0, 0.0, 0.0)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB; a missing or unreadable file is a DataError naming it."""
    import cv2

    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"cannot decode image file: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def probe_image(path: Path) -> Optional[str]:
    """Why the image file at ``path`` is unusable ('missing', 'empty file', ...), or None when it decodes.

    JPEG files without an end-of-image marker near their end are reported as truncated, because
    decoders return a grey-filled image for them instead of failing.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        return "missing"
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return "empty file"
    if data.size >= 2 and data[0] == 0xFF and data[1] == 0xD8 and b"\xff\xd9" not in data[-1024:].tobytes():
        return "truncated JPEG (no end-of-image marker)"
    image = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_2)
    if image is None:
        return "cannot decode"
    return None


BOX_TOLERANCE = 1.0  # pixels a box may reach past the image border (rounding in annotation tools)


def check_boxes(boxes: np.ndarray, height: int, width: int, where: str) -> None:
    """Raise a DataError naming ``where`` when a box (xyxy pixels) lies past the image border by more
    than :data:`BOX_TOLERANCE` or is inverted; such a box is an annotation for another image or size."""
    t = BOX_TOLERANCE
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = box.tolist()
        if not (x1 >= -t and y1 >= -t and x2 <= width + t and y2 <= height + t and x1 <= x2 and y1 <= y2):
            shown = ", ".join(f"{v:g}" for v in box)
            raise DataError(f"{where}: box ({shown}) lies outside the {width}x{height} image; fix the annotation")


def read_gray(path: Path) -> np.ndarray:
    """Read an image file as H×W uint8 (first channel of multi-channel files)."""
    import cv2

    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"cannot decode mask file: {path}")
    if image.ndim == 3:
        image = image[..., 0]
    return image


@dataclass
class Record:
    """One image as a loader knows it before reading pixels."""

    name: str
    label: int
    image_id: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    image_path: Optional[Path] = None
    mask_path: Optional[Path] = None


class RecordDataset(Dataset):
    """A dataset over a list of Records; subclasses override ``load_image``/``load_mask`` if needed."""

    def __init__(
        self,
        records: Sequence[Record],
        class_names: Sequence[str],
        transform: Optional[Transform] = None,
    ) -> None:
        self.records: List[Record] = list(records)
        self.class_names = list(class_names)
        self.transform = transform or to_tensor

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> List[int]:
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, record: Record) -> np.ndarray:
        assert record.image_path is not None
        return read_image(record.image_path)

    def load_mask(self, record: Record, shape: Tuple[int, int]) -> Optional[np.ndarray]:
        """Return the H×W bool foreground mask for an image of ``shape``, or None when the dataset has none."""
        return None

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        image = self.load_image(record)
        check_boxes(record.boxes, int(image.shape[0]), int(image.shape[1]), f"image {record.image_path or record.name} (id {record.image_id})")
        mask = self.load_mask(record, (int(image.shape[0]), int(image.shape[1])))
        img, boxes, msk, to_orig = self.transform(image, record.boxes, mask)
        return Sample(
            image=img,
            label=record.label,
            boxes=boxes,
            mask=msk,
            image_id=record.image_id,
            name=record.name,
            orig_size=(int(image.shape[0]), int(image.shape[1])),
            to_orig=to_orig,
        )
