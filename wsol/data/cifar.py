"""CIFAR-10 (python pickle batches) and CIFAR-10-C (``.npy`` corruption arrays).

The CIFAR-10 batches are pickles. Unpickling can run arbitrary code, so they are read through
:class:`SafeUnpickler`, which resolves only the few globals a dict of bytes, lists and uint8
numpy arrays needs (numpy's array/dtype reconstructors, and ``_codecs.encode`` restricted to
latin-1, which protocol-2 pickles written by Python 3 use for bytes). Any other global — e.g.
``os.system`` — is refused with DataError before anything is called.
"""
from __future__ import annotations

import bisect
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from wsol.data.base import Transform, check_split, to_tensor
from wsol.data.registry import DATASETS
from wsol.data.sample import Sample
from wsol.errors import ConfigError, DataError, DataFileMissingError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10C_SEVERITIES = 5

_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCHES = ("test_batch",)


class ArrayDataset(Dataset):
    """Images held as one N×H×W×3 uint8 array; returns :class:`Sample` through the transform.

    ``sources`` is a list of (file name, first index) segments used to name sample ``i`` as
    ``"<file>[<row in file>]"``; ``image_ids`` are the stable ids (1-based official order).
    """

    has_masks = False
    has_some_masks = False
    has_boxes = False  # class labels only: box metrics (and ``localize --sweep``) cannot run on these

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        image_ids: np.ndarray,
        sources: Sequence[Tuple[str, int]],
        transform: Optional[Transform],
        mean: Tuple[float, float, float],
        std: Tuple[float, float, float],
        native_size: int,
    ) -> None:
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be N×H×W×3 uint8, got {images.shape} {images.dtype}")
        if not len(images) == len(labels) == len(image_ids):
            raise ValueError("images, labels and image_ids differ in length")
        self.images = images
        self._labels = np.asarray(labels, dtype=np.int64)
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        self.class_names = list(class_names)
        self.sources = list(sources)
        self._starts = [start for _, start in self.sources]
        self.transform = transform or to_tensor
        self.mean = mean
        self.std = std
        self.native_size = native_size
        self.skipped: List[str] = []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> List[int]:
        return self._labels.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        """``"<file>[<row>]"`` for sample ``index``."""
        seg = bisect.bisect_right(self._starts, index) - 1
        file, start = self.sources[seg]
        return f"{file}[{index - start}]"

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        image = self.images[index]
        img, boxes, mask, to_orig = self.transform(image, np.zeros((0, 4), dtype=np.float32), None)
        return Sample(
            image=img,
            label=int(self._labels[index]),
            boxes=boxes if isinstance(boxes, torch.Tensor) else torch.as_tensor(boxes),
            mask=mask,
            image_id=int(self.image_ids[index]),
            name=self.name(index),
            orig_size=(int(image.shape[0]), int(image.shape[1])),
            to_orig=to_orig,
        )


# --------------------------------------------------------------------------- safe pickles


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; only latin-1 is allowed."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return obj.encode("latin-1", errors)


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1, dtype=np.uint8))[0]
    frombuffer = np.zeros(1, dtype=np.uint8).__reduce_ex__(5)[0]
    allowed: Dict[Tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy array/dtype reconstruction globals."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {self.path}: it references {module}.{name}, which a CIFAR batch never needs"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"refusing to unpickle {self.path}: it uses persistent ids")


def safe_load_pickle(path: Path) -> Any:
    """Load a data pickle through :class:`SafeUnpickler`; any failure is a DataError naming the file."""
    if not path.is_file():
        raise DataFileMissingError(f"file not found: {path}")
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as err:  # pickle raises many types for a damaged file
        raise DataError(f"cannot read pickle {path}: {type(err).__name__}: {err}") from None


def _get(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise DataError(f"{path} does not hold a dict (got {type(d).__name__})")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path} has no key {key!r}")


def _cifar_dir(root: Path) -> Path:
    sub = root / "cifar-10-batches-py"
    return sub if sub.is_dir() else root


def _read_batch(path: Path, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    content = safe_load_pickle(path)
    data = _get(content, "data", path)
    labels = _get(content, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be an N×3072 uint8 array, got {type(data).__name__} {shape}")
    try:
        label_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' is not a list of integers") from None
    if len(label_arr) != len(data):
        raise DataError(f"{path}: {len(label_arr)} labels for {len(data)} images")
    bad = np.nonzero((label_arr < 0) | (label_arr >= num_classes))[0]
    if bad.size:
        raise DataError(f"{path}: label {label_arr[bad[0]]} of image {bad[0]} is outside 0..{num_classes - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), label_arr


def _read_label_names(path: Path) -> List[str]:
    names = _get(safe_load_pickle(path), "label_names", path)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: 'label_names' must be a non-empty list")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


@DATASETS.register("cifar10")
def build_cifar10(
    root: Path,
    split: str = "train",
    transform: Optional[Transform] = None,
    skip_corrupt: bool = False,
) -> ArrayDataset:
    """CIFAR-10 from the python batches in ``root/cifar-10-batches-py/`` (or ``root`` itself).

    ``split``: train (data_batch_1..5) or test (test_batch). Image ids are 1-based positions in
    the official order. ``skip_corrupt`` is accepted for interface uniformity (arrays hold no
    per-image files); a damaged batch is always an error.
    """
    check_split(split, ("train", "test"), "cifar10")
    base = _cifar_dir(Path(root))
    class_names = _read_label_names(base / "batches.meta")
    parts = []
    sources = []
    start = 0
    for batch in _TRAIN_BATCHES if split == "train" else _TEST_BATCHES:
        images, labels = _read_batch(base / batch, len(class_names))
        parts.append((images, labels))
        sources.append((batch, start))
        start += len(images)
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset(
        images, labels, class_names, np.arange(1, len(images) + 1), sources, transform,
        mean=CIFAR10_MEAN, std=CIFAR10_STD, native_size=32,
    )


build_cifar10.splits = ("train", "test")  # type: ignore[attr-defined]


def cifar10c_corruptions(root: Path) -> List[str]:
    """The corruption names available under ``root`` (``<name>.npy`` other than labels.npy)."""
    return sorted(p.stem for p in Path(root).glob("*.npy") if p.name != "labels.npy")


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataFileMissingError(f"file not found: {path}")
    try:
        return np.load(str(path), mmap_mode="r", allow_pickle=False)
    except Exception as err:  # numpy raises ValueError/OSError/... for a damaged file
        raise DataError(f"cannot read {path}: {err}") from None


@DATASETS.register("cifar10c")
def build_cifar10c(
    root: Path,
    split: str = "test",
    transform: Optional[Transform] = None,
    corruption: Optional[str] = None,
    severity: int = 1,
    skip_corrupt: bool = False,
) -> ArrayDataset:
    """CIFAR-10-C: ``root/<corruption>.npy`` (5 severities × N stacked, N×32×32×3 uint8) + ``labels.npy``.

    Only split 'test' exists. Image ids are 1-based positions within the severity block, i.e.
    the CIFAR-10 test image each corrupted image comes from.
    """
    root = Path(root)
    check_split(split, ("test",), "cifar10c")
    available = cifar10c_corruptions(root)
    listed = ", ".join(available) if available else f"none ({root} holds no <name>.npy beside labels.npy; see datasets/README.md)"
    if corruption is None:
        raise ConfigError(f"cifar10c needs the option corruption=<name> (on the command line -o corruption=fog -o severity=1); available: {listed}")
    if corruption not in available:
        raise DataError(f"no corruption {corruption!r} in {root} (no {corruption}.npy); available: {listed}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= CIFAR10C_SEVERITIES:
        raise ConfigError(f"cifar10c severity must be an integer in 1..{CIFAR10C_SEVERITIES}, got {severity!r}")
    path = root / f"{corruption}.npy"
    data = _load_npy(path)
    if data.ndim != 4 or data.shape[1:] != (32, 32, 3) or data.dtype != np.uint8:
        raise DataError(f"{path} must hold an N×32×32×3 uint8 array, got {data.shape} {data.dtype}")
    if len(data) % CIFAR10C_SEVERITIES:
        raise DataError(f"{path} holds {len(data)} images, not a multiple of {CIFAR10C_SEVERITIES} severities")
    per = len(data) // CIFAR10C_SEVERITIES
    labels_path = root / "labels.npy"
    labels = np.asarray(_load_npy(labels_path)).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{labels_path} must hold integers, got {labels.dtype}")
    if len(labels) == len(data):
        labels = labels[(severity - 1) * per : severity * per]
    elif len(labels) != per:
        raise DataError(f"{labels_path} holds {len(labels)} labels; expected {len(data)} or {per} for {path}")
    labels = labels.astype(np.int64)
    bad = np.nonzero((labels < 0) | (labels >= len(CIFAR10_CLASSES)))[0]
    if bad.size:
        raise DataError(f"{labels_path}: label {labels[bad[0]]} at position {bad[0]} is outside 0..9")
    images = np.array(data[(severity - 1) * per : severity * per], copy=True)
    return ArrayDataset(
        images, labels, CIFAR10_CLASSES, np.arange(1, per + 1),
        [(f"{corruption}.npy", -(severity - 1) * per)], transform,
        mean=CIFAR10_MEAN, std=CIFAR10_STD, native_size=32,
    )


build_cifar10c.splits = ("test",)  # type: ignore[attr-defined]
