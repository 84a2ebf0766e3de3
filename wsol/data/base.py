"""Shared pieces of every loader: image reading, the transform protocol, the skip-corrupt check,
and the record-list dataset every file-based loader builds on."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from wsol.data.sample import Sample
from wsol.errors import ConfigError, DataError, did_you_mean

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

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


def decode_file(path: Path, flags: int, kind: str) -> np.ndarray:
    """``cv2.imdecode`` of the file at ``path`` with ``flags``; a missing, empty or undecodable file
    is a DataError naming it as a ``kind`` ('image', 'mask') file."""
    import cv2

    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataError(f"cannot decode {kind} file: {path}")
    return image


def read_image(path: Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB; a missing or unreadable file is a DataError naming it."""
    import cv2

    return cv2.cvtColor(decode_file(path, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


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


def require_images(dataset: Any, name: str, split: str) -> None:
    """Raise a DataError when a built split holds no images (a wrong root or split file), so a job
    stops before it trains on nothing or writes empty results."""
    if len(dataset) == 0:
        raise DataError(f"split {split!r} of dataset {name} holds no images; check --root and the dataset's split files")


def check_split(split: str, choices: Sequence[str], name: str) -> None:
    """An unknown split is a DataError naming the dataset's splits (the one wording of every loader)."""
    if split not in choices:
        raise DataError(f"{name} has splits {', '.join(choices)}; got split {split!r}{did_you_mean(split, choices)}")


def option_path(root: Path, value: Path) -> Path:
    """A loader's path option (``annotations=``, ``segmentations=``, ``metadata=`` …): as given, or under ``root``
    when it is relative and not found from the working folder."""
    path = Path(value)
    return root / path if not path.is_absolute() and not path.exists() else path


def check_flag(name: str, value: Any) -> bool:
    """``value`` of loader option ``name`` when it is a bool, else a ConfigError (for calls from Python,
    which the registry's option check does not see)."""
    if not isinstance(value, bool):
        raise ConfigError(f"option {name} must be true or false, got {value!r}")
    return value


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

    image = decode_file(path, cv2.IMREAD_UNCHANGED, "mask")
    if image.ndim == 3:
        image = image[..., 0]
    return image


def read_mask_file(path: Path) -> np.ndarray:
    """Read a (possibly soft, possibly 'LA') mask PNG: first channel above half range (> 127 for 8 bit)."""
    mask = read_gray(path)
    half = np.iinfo(mask.dtype).max / 2.0 if mask.dtype.kind in "ui" else 0.5
    return mask > half


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """The 1×4 xyxy bounding box (x2/y2 exclusive) of a bool mask; 0×4 when the mask is empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)


def check_files(files: Sequence[Path], skip_corrupt: bool, where: str = "") -> Optional[str]:
    """The skip-corrupt rule of every loader, for one image's files (the image first, then masks).

    Without ``skip_corrupt`` a missing file is a DataError naming it (and ``where``, e.g. the
    list file and line) and decoding errors surface when the sample is read; with it every file
    is probed once (:func:`probe_image`) and the first problem is returned, for ``skipped``.
    """
    for i, path in enumerate(files):
        kind = "image" if i == 0 else "mask"
        if not skip_corrupt:
            if not path.is_file():
                context = f" ({where})" if where else ""
                raise DataError(f"{kind} file {path}{context} not found; `wsol data verify` lists every unusable file, and skip_corrupt=True (`-o skip_corrupt=true`) leaves them out")
            continue
        problem = probe_image(path)
        if problem is not None:
            return problem if i == 0 else f"mask {path.name}: {problem}"
    return None


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
        """Read, check and transform one record; a record without boxes but with a mask gets the mask's box."""
        record = self.records[index]
        image = self.load_image(record)
        check_boxes(record.boxes, int(image.shape[0]), int(image.shape[1]), f"image {record.image_path or record.name} (id {record.image_id})")
        mask = self.load_mask(record, (int(image.shape[0]), int(image.shape[1])))
        boxes = record.boxes
        if mask is not None:
            if mask.shape != image.shape[:2]:
                raise DataError(
                    f"mask {record.mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {record.image_path} is "
                    f"{image.shape[1]}x{image.shape[0]}"
                )
            if len(boxes) == 0:
                boxes = mask_to_box(mask)
        img, box, msk, to_orig = self.transform(image, boxes, mask)
        return Sample(
            image=img,
            label=record.label,
            boxes=box,
            mask=msk,
            image_id=record.image_id,
            name=record.name,
            orig_size=(int(image.shape[0]), int(image.shape[1])),
            to_orig=to_orig,
        )


class AnnotatedDataset(RecordDataset):
    """A RecordDataset with the attributes every wsol dataset exposes.

    ``has_masks`` (default: every record names a mask file; ``has_boxes`` and ``has_some_masks``: some
    image has one), ``native_size`` (model input size), ``mean``/``std`` (normalization stats),
    ``skipped`` (``"<name>: <problem>"`` for each image left out by ``skip_corrupt``), ``root`` and
    ``split``. Masks are the union of a record's mask files (:meth:`mask_files`), shape-checked
    against the image.
    """

    def __init__(
        self,
        records: Sequence[Record],
        class_names: Sequence[str],
        transform: Optional[Transform] = None,
        *,
        has_masks: Optional[bool] = None,
        native_size: int = 224,
        mean: Tuple[float, float, float] = IMAGENET_MEAN,
        std: Tuple[float, float, float] = IMAGENET_STD,
        skipped: Optional[List[str]] = None,
        root: Optional[Path] = None,
        split: str = "train",
    ) -> None:
        super().__init__(records, class_names, transform)
        if has_masks is None:
            has_masks = bool(self.records) and all(r.mask_path is not None for r in self.records)
        self.has_masks = bool(has_masks)
        self.native_size = int(native_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.skipped: List[str] = list(skipped or [])
        self.root = root
        self.split = split

    def mask_files(self, record: Record) -> List[Path]:
        """The mask files whose union is this record's mask."""
        return [record.mask_path] if record.mask_path is not None else []

    @property
    def has_boxes(self) -> bool:
        """Whether some image has a ground-truth box: its own, or its mask's (see ``__getitem__``); read from the records, no image is loaded."""
        return any(len(r.boxes) or self.mask_files(r) for r in self.records)

    @property
    def has_some_masks(self) -> bool:
        """Whether some image has a ground-truth mask (every one does when ``has_masks``; Flowers' trimaps and
        segmentations cover part of a split); read from the records, no image is loaded."""
        return self.has_masks or any(self.mask_files(r) for r in self.records)

    def load_mask(self, record: Record, shape: Tuple[int, int]) -> Optional[np.ndarray]:
        """The H×W bool mask of ``record`` (None when the dataset has no masks); all-False if it has none."""
        if not self.has_masks:
            return None
        mask = np.zeros(shape, dtype=bool)
        for path in self.mask_files(record):
            part = read_mask_file(path)
            if part.shape != tuple(shape):
                raise DataError(f"mask {path} is {part.shape[1]}x{part.shape[0]} but image {record.image_path} is {shape[1]}x{shape[0]}")
            mask |= part
        return mask
