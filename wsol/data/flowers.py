"""Oxford Flowers loaders: ``flowers17`` (with trimaps) and ``flowers102`` (with ``segmim`` masks).

Neither dataset has ground-truth boxes. Where a mask exists, the sample's box is the mask's
bounding box (xyxy, x2/y2 exclusive) so box metrics can run on masked images; images without a
mask get zero boxes and ``mask=None``.

Flower-17 trimaps (``trimaps/image_XXXX.png``, listed in ``trimaps/imlist.mat``)
    The published pixel semantics are NOT verified here. A trimap has three regions: the flower,
    the background, and a band of uncertain boundary pixels. A third-party loader opens the PNG as
    a palette image and takes palette *index* 1 as the flower, so the default foreground rule is
    ``trimap_foreground=1``: a pixel is foreground iff its palette index (or grey value for a
    single-channel PNG) equals 1. Foreground is an exact code match, so the boundary band (its
    own code) and the background are never foreground; evaluate with that in mind. Change the
    rule with the ``trimap_foreground`` option: an int or list of ints selects palette indices /
    grey values, a ``"#rrggbb"`` string (or a list of them) selects RGB colours. RGB PNGs are
    matched by colour (palette PNGs can be matched by colour too, through their palette); an
    RGB PNG whose three channels are equal everywhere is treated as grey. An int-only rule on a
    true-colour PNG raises DataError asking for a colour. Use :func:`inspect_trimap` to see the
    codes a file really holds before choosing.

Flowers-102 segmentations (``segmim/segmim_XXXXX.jpg``)
    The background is painted pure blue (0, 0, 254) and saved as JPEG, so the blue is noisy: with
    4:2:0 chroma subsampling the blue next to a petal edge decodes to values like (15, 10, 180).
    A pixel is background iff R < 40 and G < 40 and B > 160 (``SEGMIM_RG_MAX``, ``SEGMIM_B_MIN``);
    everything else is foreground. On synthetic quality-90 JPEGs this rule gave a 35-60 % thinner
    false-foreground rim than the stricter R,G < 30, B > 220 rule while keeping a dark-blue
    (30, 60, 160) flower as foreground; a thin rim (1-2 px) of edge pixels can still be foreground.

Both loaders normalise with ImageNet statistics (the usual choice for these small fine-grained
sets, which are trained from ImageNet-pretrained backbones or at ImageNet-like resolution).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from wsol.data.base import IMAGENET_MEAN, IMAGENET_STD, AnnotatedDataset, Record, Transform, check_files, check_flag, check_split, read_image
from wsol.data.registry import DATASETS
from wsol.errors import ConfigError, DataError, DataFileMissingError

log = logging.getLogger(__name__)


FLOWERS17_CLASSES = (
    "daffodil", "snowdrop", "lily valley", "bluebell", "crocus", "iris", "tigerlily", "tulip",
    "fritillary", "sunflower", "daisy", "colts' foot", "dandelion", "cowslip", "buttercup",
    "windflower", "pansy",
)
FLOWERS17_PER_CLASS = 80
FLOWERS17_COUNT = 1360
DEFAULT_TRIMAP_FOREGROUND = 1

SEGMIM_RG_MAX = 40
SEGMIM_B_MIN = 160

_SPLIT_KEYS17 = {"train": ("trn",), "val": ("val",), "test": ("tst",), "trainval": ("trn", "val")}
_SPLIT_KEYS102 = {"train": ("trnid",), "val": ("valid",), "test": ("tstid",), "trainval": ("trnid", "valid")}

ForegroundRule = Union[int, str, Sequence[Union[int, str]]]


# --------------------------------------------------------------------------- shared helpers


def balance_indices(labels: Sequence[int], per_class: int) -> List[int]:
    """Indices that repeat each class's items cyclically until every class has ``per_class``.

    Used for class balancing by augmentation (Flower-17: 1,000/class; GTSRB: 10,000/class): the
    repeated items only differ once the caller's random transform is applied. A class with more
    than ``per_class`` items is a ConfigError (balancing never drops data).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(f"balance_to must be a positive integer, got {per_class!r}")
    by_class: Dict[int, List[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[int(label)].append(index)
    largest = max((len(v) for v in by_class.values()), default=0)
    if largest > per_class:
        raise ConfigError(f"balance_to={per_class} is below the largest class size {largest}; use at least {largest}")
    out: List[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        out.extend(members[i % len(members)] for i in range(per_class))
    return out


def check_records(records: Sequence[Record], skip_corrupt: bool) -> Tuple[List[Record], List[str]]:
    """:func:`wsol.data.base.check_files` over records: the kept ones, and ``"<name>: <problem>"`` per left-out one."""
    kept: List[Record] = []
    skipped: List[str] = []
    for record in records:
        files = [p for p in (record.image_path, record.mask_path) if p is not None]
        problem = check_files(files, skip_corrupt)
        if problem is None:
            kept.append(record)
        else:
            skipped.append(f"{record.name}: {problem}")
    if skipped:
        log.warning("left out %d unusable images, first: %s", len(skipped), skipped[0])
    return kept, skipped


def load_mat(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    """Read the given keys of a MATLAB .mat file; a missing file or key is a DataError naming it."""
    import scipy.io

    if not path.is_file():
        raise DataFileMissingError(f"file not found: {path}")
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises many types for a damaged file
        raise DataError(f"cannot read MATLAB file {path}: {err}") from None
    out = {}
    for key in keys:
        if key not in content:
            found = ", ".join(sorted(k for k in content if not k.startswith("__")))
            raise DataError(f"{path} has no key {key!r} (found: {found})")
        out[key] = np.asarray(content[key])
    return out


def mat_indices(array: np.ndarray, path: Path, key: str, upper: int) -> List[int]:
    """Flatten a .mat array of 1-based indices and check they are integers in 1..upper."""
    flat = np.asarray(array).ravel()
    if flat.size and (not np.issubdtype(flat.dtype, np.number) or not np.all(np.isfinite(flat))):
        raise DataError(f"{path} key {key!r} holds non-numeric values")
    ints = flat.astype(np.int64)
    if flat.size and not np.all(ints == flat):
        raise DataError(f"{path} key {key!r} holds non-integer values")
    bad = np.nonzero((ints < 1) | (ints > upper))[0]
    if bad.size:
        raise DataError(f"{path} key {key!r} entry {bad[0] + 1} is {ints[bad[0]]}, outside 1..{upper}")
    return [int(v) for v in ints]


def apply_balance(records: List[Record], balance_to: Optional[int]) -> List[Record]:
    """Repeat records per class to ``balance_to`` each (see :func:`balance_indices`)."""
    if balance_to is None:
        return records
    return [records[i] for i in balance_indices([r.label for r in records], balance_to)]


# --------------------------------------------------------------------------- trimaps


def parse_foreground_rule(rule: ForegroundRule) -> Tuple[Tuple[int, ...], Tuple[Tuple[int, int, int], ...]]:
    """Split a ``trimap_foreground`` rule into (index/grey values, RGB colours)."""
    items = list(rule) if isinstance(rule, (list, tuple)) else [rule]
    if not items:
        raise ConfigError("trimap_foreground must name at least one value or colour")
    values: List[int] = []
    colours: List[Tuple[int, int, int]] = []
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"trimap_foreground entry {item!r} is not an int or '#rrggbb' colour")
        if isinstance(item, (int, np.integer)) and 0 <= int(item) <= 65535:
            values.append(int(item))
        elif isinstance(item, str) and item.strip().isdigit():
            values.append(int(item.strip()))
        elif isinstance(item, str) and len(item.strip()) == 7 and item.strip().startswith("#"):
            text = item.strip()
            try:
                colours.append((int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)))
            except ValueError:
                raise ConfigError(f"trimap_foreground colour {item!r} is not of the form '#rrggbb'") from None
        else:
            raise ConfigError(f"trimap_foreground entry {item!r} is not an int or '#rrggbb' colour")
    return tuple(values), tuple(colours)


def read_trimap(path: Path) -> Tuple[str, np.ndarray, Optional[np.ndarray]]:
    """Read a trimap PNG as (kind, data, palette): kind 'index' (H×W codes) or 'rgb' (H×W×3)."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                palette = im.getpalette() or []
                pal = np.asarray(palette, dtype=np.uint8)[: len(palette) // 3 * 3].reshape(-1, 3)
                return "index", np.asarray(im), pal
            if im.mode in ("L", "I", "I;16", "1"):
                return "index", np.asarray(im).astype(np.int64), None
            if im.mode == "LA":
                return "index", np.asarray(im)[..., 0].astype(np.int64), None
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot decode mask file: {path} ({err})") from None
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return "index", rgb[..., 0].astype(np.int64), None
    return "rgb", rgb, None


def trimap_to_mask(path: Path, rule: ForegroundRule = DEFAULT_TRIMAP_FOREGROUND) -> np.ndarray:
    """Decode a trimap file into an H×W bool flower mask under ``rule`` (see the module docstring)."""
    values, colours = parse_foreground_rule(rule)
    kind, data, palette = read_trimap(path)
    if kind == "index":
        fg = np.isin(data, values) if values else np.zeros(data.shape, dtype=bool)
        if colours:
            if palette is not None:
                safe = np.clip(data, 0, max(len(palette) - 1, 0))
                rgb = palette[safe] if len(palette) else np.zeros(data.shape + (3,), np.uint8)
                fg |= _match_colours(rgb, colours)
            else:
                greys = [c[0] for c in colours if c[0] == c[1] == c[2]]
                fg |= np.isin(data, greys)
        return fg
    if not colours:
        raise DataError(
            f"trimap {path} is a true-colour image; pass trimap_foreground as a '#rrggbb' colour "
            f"(see wsol.data.flowers.inspect_trimap for the colours it holds)"
        )
    return _match_colours(data, colours)


def _match_colours(rgb: np.ndarray, colours: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    out = np.zeros(rgb.shape[:2], dtype=bool)
    for colour in colours:
        out |= np.all(rgb == np.asarray(colour, dtype=rgb.dtype), axis=-1)
    return out


def inspect_trimap(path: Union[str, Path]) -> Dict[str, Any]:
    """Report a trimap's storage kind and its distinct codes (or colours) with pixel counts."""
    kind, data, palette = read_trimap(Path(path))
    if kind == "index":
        codes, counts = np.unique(data, return_counts=True)
        out: Dict[str, Any] = {"kind": "palette" if palette is not None else "grey", "codes": {}}
        for code, count in zip(codes.tolist(), counts.tolist()):
            entry: Dict[str, Any] = {"pixels": count}
            if palette is not None and code < len(palette):
                entry["colour"] = "#%02x%02x%02x" % tuple(int(v) for v in palette[code])
            out["codes"][int(code)] = entry
        return out
    colours, counts = np.unique(data.reshape(-1, 3), axis=0, return_counts=True)
    return {
        "kind": "rgb",
        "colours": {"#%02x%02x%02x" % tuple(int(v) for v in c): int(n) for c, n in zip(colours, counts)},
    }


class Flowers17Dataset(AnnotatedDataset):
    """Oxford 17 Flowers; masks come from the trimaps under the ``trimap_foreground`` rule."""

    def __init__(
        self, *args: Any, trimap_foreground: ForegroundRule = DEFAULT_TRIMAP_FOREGROUND, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.trimap_foreground = trimap_foreground

    def load_mask(self, record: Record, shape: Tuple[int, int]) -> Optional[np.ndarray]:
        if record.mask_path is None:
            return None
        return trimap_to_mask(record.mask_path, self.trimap_foreground)


@DATASETS.register("flowers17")
def build_flowers17(
    root: Path,
    split: str = "train",
    transform: Optional[Transform] = None,
    fold: int = 1,
    segmented_only: bool = False,
    trimap_foreground: ForegroundRule = DEFAULT_TRIMAP_FOREGROUND,
    balance_to: Optional[int] = None,
    skip_corrupt: bool = False,
) -> Flowers17Dataset:
    """Oxford 17 Flowers from ``root`` (``jpg/``, ``datasplits.mat``, optional ``trimaps/``).

    ``split``: train / val / test / trainval of split ``fold`` (1..3) in datasplits.mat.
    ``segmented_only``: keep only images listed in ``trimaps/imlist.mat``. ``balance_to``: repeat
    images per class to that count (augmentation is the caller's transform).
    """
    check_split(split, list(_SPLIT_KEYS17), "flowers17")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= 3:
        raise ConfigError(f"flowers17 fold must be 1, 2 or 3, got {fold!r}")
    check_flag("segmented_only", segmented_only)
    check_flag("skip_corrupt", skip_corrupt)
    parse_foreground_rule(trimap_foreground)
    root = Path(root)
    split_path = root / "datasplits.mat"
    keys = [f"{prefix}{fold}" for prefix in _SPLIT_KEYS17[split]]
    mats = load_mat(split_path, keys)
    indices = [i for key in keys for i in mat_indices(mats[key], split_path, key, FLOWERS17_COUNT)]

    with_masks: set = set()
    trimap_dir = root / "trimaps"
    if trimap_dir.is_dir() or segmented_only:
        imlist_path = trimap_dir / "imlist.mat"
        imlist = load_mat(imlist_path, ["imlist"])["imlist"]
        with_masks = set(mat_indices(imlist, imlist_path, "imlist", FLOWERS17_COUNT))
    if segmented_only:
        indices = [i for i in indices if i in with_masks]

    records = [
        Record(
            name=f"jpg/image_{i:04d}.jpg",
            label=(i - 1) // FLOWERS17_PER_CLASS,
            image_id=i,
            image_path=root / "jpg" / f"image_{i:04d}.jpg",
            mask_path=trimap_dir / f"image_{i:04d}.png" if i in with_masks else None,
        )
        for i in indices
    ]
    records, skipped = check_records(records, skip_corrupt)
    records = apply_balance(records, balance_to)
    return Flowers17Dataset(
        records,
        FLOWERS17_CLASSES,
        transform,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        native_size=128,
        skipped=skipped,
        trimap_foreground=trimap_foreground,
    )


build_flowers17.splits = ("train", "val", "test")  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- flowers102


def read_segmim(path: Path) -> np.ndarray:
    """Decode a Flowers-102 ``segmim`` JPEG into an H×W bool foreground mask (non-blue pixels)."""
    rgb = read_image(path).astype(np.int16)
    background = (rgb[..., 0] < SEGMIM_RG_MAX) & (rgb[..., 1] < SEGMIM_RG_MAX) & (rgb[..., 2] > SEGMIM_B_MIN)
    return ~background


def flowers102_class_names() -> List[str]:
    """The 102 class names in label order (torchvision's list; generic names if unavailable)."""
    try:
        from torchvision.datasets import Flowers102

        names = list(getattr(Flowers102, "classes", []))
    except ImportError:
        names = []
    return names if len(names) == 102 else [f"class_{i:03d}" for i in range(1, 103)]


class Flowers102Dataset(AnnotatedDataset):
    """Oxford 102 Flowers; masks come from ``segmim`` where the background is painted blue."""

    def load_mask(self, record: Record, shape: Tuple[int, int]) -> Optional[np.ndarray]:
        if record.mask_path is None:
            return None
        return read_segmim(record.mask_path)


@DATASETS.register("flowers102")
def build_flowers102(
    root: Path,
    split: str = "train",
    transform: Optional[Transform] = None,
    balance_to: Optional[int] = None,
    skip_corrupt: bool = False,
) -> Flowers102Dataset:
    """Oxford 102 Flowers from ``root`` (``jpg/``, ``imagelabels.mat``, ``setid.mat``, optional ``segmim/``).

    ``split``: train (trnid) / val (valid) / test (tstid) / trainval.
    """
    check_split(split, list(_SPLIT_KEYS102), "flowers102")
    check_flag("skip_corrupt", skip_corrupt)
    root = Path(root)
    labels_path = root / "imagelabels.mat"
    raw = load_mat(labels_path, ["labels"])["labels"]
    labels = mat_indices(raw, labels_path, "labels", 102)
    setid_path = root / "setid.mat"
    keys = list(_SPLIT_KEYS102[split])
    mats = load_mat(setid_path, keys)
    indices = [i for key in keys for i in mat_indices(mats[key], setid_path, key, len(labels))]
    seg_dir = root / "segmim"
    has_seg = seg_dir.is_dir()
    records = []
    for i in indices:
        seg = seg_dir / f"segmim_{i:05d}.jpg"
        records.append(
            Record(
                name=f"jpg/image_{i:05d}.jpg",
                label=labels[i - 1] - 1,
                image_id=i,
                image_path=root / "jpg" / f"image_{i:05d}.jpg",
                mask_path=seg if has_seg and seg.is_file() else None,
            )
        )
    records, skipped = check_records(records, skip_corrupt)
    records = apply_balance(records, balance_to)
    return Flowers102Dataset(
        records,
        flowers102_class_names(),
        transform,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        native_size=224,
        skipped=skipped,
    )


build_flowers102.splits = ("train", "val", "test")  # type: ignore[attr-defined]
