"""``shapes``: a seeded synthetic WSOL set written in CUB-200-2011's exact on-disk format.

Each image shows one object: a large textured blob ("body") with a small, nearly upright mark
near one end of it. The class is the mark's pattern (disc, square, triangle, ...; the mark is
light or dark at random, and above 10 classes its colour family is part of the class), so a
classifier can decide from the mark alone, while the box and mask cover the whole object.
Backgrounds are textured and hold distractor blobs (same family and texture as bodies, no mark)
and lines; objects vary in position, scale (about a third to most of the frame), rotation and
colour. A naturally trained model's maps therefore tend to light up the mark, a part of the
object: the classic WSOL failure that localization methods must fix.

Images are PNG (exactly reproducible bytes for a given seed); ``build_dataset('shapes', root, split)``
reads the tree with the CUB loader and takes ``native_size`` and mean/std from ``shapes.json``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from wsol.data.base import Transform
from wsol.data.cub import CubDataset, load_cub
from wsol.data.registry import DATASETS, DEFAULT_ROOTS, check_options
from wsol.errors import DataError, option_flag
from wsol.utils.io import current_umask, temp_dir_beside

FORMAT_VERSION = 3
MARKS = ("disc", "square", "triangle", "plus", "ring", "bars", "cross", "checker", "diamond", "dots")
TONES: Dict[str, Tuple[float, float, float]] = {
    "light": (238.0, 238.0, 232.0),
    "dark": (22.0, 20.0, 26.0),
    "red": (215.0, 35.0, 30.0),
    "blue": (35.0, 70.0, 225.0),
}
MAX_CLASSES = len(MARKS) * len(TONES)
MARK_MIN_RADIUS = 0.12  # mark radius: at least this fraction of the frame ...
MARK_BODY_RADIUS = 0.5  # ... and this fraction of the body's minor semi-axis
MARK_TILT = math.radians(15.0)  # marks stay nearly upright: a square turned 45° would be a diamond
META_FILE = "shapes.json"
DEFAULT_PARAMS = {"n_train": 2000, "n_test": 500, "size": 64, "num_classes": 10, "seed": 0}
"""The set the cache holds: what every command given ``--dataset shapes`` without ``--root`` reads."""
_PARAM_KEYS = ("version", "n_train", "n_test", "size", "num_classes", "seed")


def shapes_class_names(num_classes: int) -> List[str]:
    """Class names: the mark pattern, plus its colour family when there are more than 10 classes."""
    if num_classes <= len(MARKS):
        return list(MARKS[:num_classes])
    tones = list(TONES)
    return [f"{MARKS[k % len(MARKS)]}_{tones[k // len(MARKS)]}" for k in range(num_classes)]


def default_shapes_root() -> Path:
    """``$XDG_CACHE_HOME/wsol/shapes`` (``~/.cache/wsol/shapes`` when the variable is unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "wsol" / "shapes"


def _mark_pixels(kind: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Pixels of mark pattern ``kind`` in mark coordinates (the mark fills roughly [-1, 1]²)."""
    ap, aq = np.abs(p), np.abs(q)
    r2 = p * p + q * q
    if kind == "disc":
        return r2 < 1.0
    if kind == "square":
        return np.maximum(ap, aq) < 0.82
    if kind == "triangle":
        return (q > -0.85) & (q < 0.8) & (ap < (q + 0.85) * 0.62)
    if kind == "plus":
        return ((ap < 0.3) & (aq < 0.95)) | ((aq < 0.3) & (ap < 0.95))
    if kind == "ring":
        return (r2 < 1.0) & (r2 > 0.36)
    if kind == "bars":
        return (ap < 0.9) & (aq < 0.95) & (np.floor((q + 0.95) / 0.38).astype(np.int64) % 2 == 0)
    if kind == "cross":
        return (r2 < 1.0) & ((np.abs(p - q) < 0.42) | (np.abs(p + q) < 0.42))
    if kind == "checker":
        return (ap < 0.88) & (aq < 0.88) & ((p > 0) ^ (q > 0))
    if kind == "diamond":
        return ap + aq < 1.05
    if kind == "dots":
        return ((p - 0.52) ** 2 + q * q < 0.2) | ((p + 0.52) ** 2 + q * q < 0.2)
    raise ValueError(kind)


Window = Tuple[slice, slice]
_OUTLINE_POINTS = 72
_HARMONICS = (2, 3, 5)


class _Canvas:
    """Pixel-centre coordinates of a size×size frame plus the drawing primitives.

    Outlines are polygons filled by OpenCV and textures are computed once per image, which keeps
    a 64×64 image well under a millisecond.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self.xx, self.yy = xx, yy
        angles = np.linspace(0.0, 2.0 * math.pi, _OUTLINE_POINTS, endpoint=False)
        self.cos_a, self.sin_a = np.cos(angles), np.sin(angles)
        harmonics = np.array(_HARMONICS, dtype=np.float64)[:, None]
        self.harm_cos, self.harm_sin = np.cos(harmonics * angles), np.sin(harmonics * angles)
        self.harm_sign = (-1.0) ** np.array(_HARMONICS, dtype=np.float64)

    def window(self, cx: float, cy: float, radius: float) -> Optional[Window]:
        """The frame rows/columns within ``radius`` of (cx, cy), or None when that misses the frame."""
        x0, x1 = max(0, int(cx - radius)), min(self.size, int(math.ceil(cx + radius)) + 1)
        y0, y1 = max(0, int(cy - radius)), min(self.size, int(math.ceil(cy + radius)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return (slice(y0, y1), slice(x0, x1))

    def pattern(self, rng: np.random.Generator) -> np.ndarray:
        """An H×W float32 texture in [-1, 1]: stripes, a checkerboard or blotches of random scale and angle."""
        import cv2

        size = self.size
        cycles = rng.uniform(2.5, 12.0)
        angle = rng.uniform(0.0, math.pi)
        freq = np.float32(2.0 * math.pi * cycles / size)
        c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            return np.sin(freq * (self.xx * c + self.yy * s) + np.float32(rng.uniform(0, 2 * math.pi)))
        if kind == 1:
            u = np.sin(freq * (self.xx * c + self.yy * s))
            v = np.sin(freq * (self.yy * c - self.xx * s))
            return np.sign(u * v)
        grid = int(rng.integers(4, 12))
        return cv2.resize(rng.uniform(-1, 1, (grid, grid)).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)

    @staticmethod
    def colourize(rng: np.random.Generator, pattern: np.ndarray, base: np.ndarray, amplitude: float) -> np.ndarray:
        """``base`` colour modulated by ``pattern`` along a random colour direction: h×w×3 float32."""
        import cv2

        sign = 1.0 if rng.random() < 0.5 else -1.0
        direction = rng.uniform(0.4, 1.0, 3) * (sign * amplitude)
        return cv2.merge([pattern * np.float32(d) + np.float32(c) for d, c in zip(direction, base)])

    def fill(self, rng: np.random.Generator, image: np.ndarray, inside: np.ndarray, win: Optional[Window], pattern: np.ndarray, base: np.ndarray, amplitude: float) -> None:
        """Paint the pixels ``inside`` (restricted to ``win``) with a textured colour."""
        if win is None:
            return
        paint = self.colourize(rng, pattern[win], base, amplitude)
        np.copyto(image[win], paint, where=inside[win][..., None])

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """Low-frequency colour field plus a texture layer: H×W×3 float32 in about [0, 255]."""
        import cv2

        grid = int(rng.integers(3, 7))
        low = rng.uniform(0, 255, (grid, grid, 3)).astype(np.float32)
        image = cv2.resize(low, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return image + self.colourize(rng, self.pattern(rng), np.zeros(3), float(rng.uniform(10.0, 35.0)))

    def blob(self, rng: np.random.Generator, cx: float, cy: float, a: float, b: float, theta: float) -> Tuple[np.ndarray, Optional[Window], np.ndarray]:
        """A star-convex blob: an ellipse (semi-axes a, b, angle theta) with a wavy outline.

        Returns (H×W bool pixels whose centres lie inside, their bounding window or None when the
        blob misses the frame, outline radius factor at the two ends).
        """
        import cv2

        wave = rng.uniform(0.0, 1.0, (2, len(_HARMONICS)))
        amps = 0.08 * wave[0]
        phases = 2.0 * math.pi * wave[1]
        ac, as_ = amps * np.cos(phases), amps * np.sin(phases)
        radius = 1.0 + ac @ self.harm_cos - as_ @ self.harm_sin
        ends = np.array([1.0 + ac.sum(), 1.0 + ac @ self.harm_sign])
        c, s = math.cos(theta), math.sin(theta)
        x = (cx - 0.5) + radius * (a * c * self.cos_a - b * s * self.sin_a)
        y = (cy - 0.5) + radius * (a * s * self.cos_a + b * c * self.sin_a)
        points = np.rint(np.stack([x, y], axis=1) * 16.0).astype(np.int32)
        mask = np.zeros((self.size, self.size), np.uint8)
        cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=4)
        x0, y0 = max(0, int(x.min())), max(0, int(y.min()))
        x1, y1 = min(self.size, int(math.ceil(x.max())) + 2), min(self.size, int(math.ceil(y.max())) + 2)
        win = (slice(y0, y1), slice(x0, x1)) if x0 < x1 and y0 < y1 else None
        return mask.view(bool), win, ends


def _pick_colour(rng: np.random.Generator, avoid: Optional[np.ndarray] = None, min_dist: float = 120.0) -> np.ndarray:
    """A random RGB colour at least ``min_dist`` away from ``avoid``."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(50):
        if avoid is None or np.linalg.norm(colour - avoid) >= min_dist:
            break
        colour = rng.uniform(0, 255, 3)
    return colour.astype(np.float32)


def render_shape(canvas: _Canvas, rng: np.random.Generator, label: int, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image of class ``label``: returns (H×W×3 uint8 RGB, H×W bool object mask).

    Distractor blobs and the object body share one texture pattern (each with its own colours),
    so texture does not tell the object apart; only the mark does.
    """
    import cv2

    size = canvas.size
    image = canvas.background(rng)
    skin = canvas.pattern(rng)
    for _ in range(int(rng.integers(2, 6))):
        a = rng.uniform(0.07, 0.28) * size
        centre = rng.uniform(-0.1, 1.1, 2) * size
        inside, win, _ = canvas.blob(rng, float(centre[0]), float(centre[1]), a, a * rng.uniform(0.4, 1.0), rng.uniform(0, math.pi))
        canvas.fill(rng, image, inside, win, skin, _pick_colour(rng), float(rng.uniform(5.0, 35.0)))
    for _ in range(int(rng.integers(0, 3))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(image, p1, p2, tuple(float(v) for v in rng.uniform(0, 255, 3)), int(rng.integers(1, 3)))

    tone_names = list(TONES)
    kind = MARKS[label % len(MARKS)]
    tone = tone_names[label // len(MARKS)] if num_classes > len(MARKS) else tone_names[int(rng.integers(0, 2))]
    mark_colour = np.clip(np.array(TONES[tone], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32), 0, 255)
    body_colour = _pick_colour(rng, avoid=mark_colour, min_dist=140.0)

    a = rng.uniform(0.17, 0.46) * size
    b = a * rng.uniform(0.55, 0.85)
    theta = rng.uniform(0, 2 * math.pi)
    extent_x = math.sqrt((a * math.cos(theta)) ** 2 + (b * math.sin(theta)) ** 2) * 1.1
    extent_y = math.sqrt((a * math.sin(theta)) ** 2 + (b * math.cos(theta)) ** 2) * 1.1
    cx = rng.uniform(min(0.85 * extent_x, size / 2), max(size - 0.85 * extent_x, size / 2))
    cy = rng.uniform(min(0.85 * extent_y, size / 2), max(size - 0.85 * extent_y, size / 2))
    body, body_win, ends = canvas.blob(rng, cx, cy, a, b, theta)

    radius = max(MARK_MIN_RADIUS * size, MARK_BODY_RADIUS * b)
    side = int(rng.integers(0, 2))
    for _ in range(2):
        reach = max(0.0, a * ends[side] - 1.2 * radius)
        sign = 1.0 if side == 0 else -1.0
        mx, my = cx + sign * reach * math.cos(theta), cy + sign * reach * math.sin(theta)
        if radius <= mx <= size - radius and radius <= my <= size - radius:
            break
        side = 1 - side
    spin = rng.uniform(-MARK_TILT, MARK_TILT)
    canvas.fill(rng, image, body, body_win, skin, body_colour, float(rng.uniform(5.0, 18.0)))
    mask = body
    win = canvas.window(mx, my, radius * 1.5)
    if win is not None:
        du, dv = canvas.xx[win] - mx, canvas.yy[win] - my
        p = (du * math.cos(spin) + dv * math.sin(spin)) / radius
        q = (-du * math.sin(spin) + dv * math.cos(spin)) / radius
        mark = _mark_pixels(kind, p, q)
        image[win][mark] = mark_colour
        mask[win] |= mark
    noise = rng.random(image.shape, dtype=np.float32)
    noise *= np.float32(14.0)
    image += noise
    image -= np.float32(6.5)
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8), mask


def _check_params(n_train: int, n_test: int, size: int, num_classes: int) -> None:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise DataError(f"num_classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    if not 32 <= size <= 1024:
        raise DataError(f"size must be between 32 and 1024 pixels, got {size}")
    if n_train < 1 or n_test < 1:
        raise DataError(f"n_train and n_test must be at least 1, got {n_train} and {n_test}")


def _is_shapes_tree(path: Path) -> bool:
    return (path / META_FILE).is_file()


def synthesize_shapes(
    out: Path,
    n_train: int = DEFAULT_PARAMS["n_train"],
    n_test: int = DEFAULT_PARAMS["n_test"],
    size: int = DEFAULT_PARAMS["size"],
    num_classes: int = DEFAULT_PARAMS["num_classes"],
    seed: int = DEFAULT_PARAMS["seed"],
) -> Path:
    """Generate the ``shapes`` set into ``out`` in CUB-200-2011's format; same arguments → same bytes.

    Labels are balanced (image ``i`` of a split has class ``i % num_classes``) and each image is
    drawn from its own seed (seed, split, index). The tree is written into a temporary folder
    beside ``out`` and renamed into place, so a crash leaves no half-written tree; an existing
    shapes tree at ``out`` is replaced, any other non-empty folder is refused.
    """
    import cv2

    _check_params(n_train, n_test, size, num_classes)
    out = Path(out)
    if out.exists() and not (out.is_dir() and (_is_shapes_tree(out) or not any(out.iterdir()))):
        raise DataError(f"{out} exists and is not a shapes tree; choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = shapes_class_names(num_classes)
    dirs = [f"{k + 1:03d}.{name}" for k, name in enumerate(names)]
    items = [(i % num_classes, 0, i) for i in range(n_train)] + [(i % num_classes, 1, i) for i in range(n_test)]
    items.sort()
    canvas = _Canvas(size)
    tmp = temp_dir_beside(out)  # also removes the half-written tree of a killed earlier run
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; the tree gets a plain mkdir's mode
        for d in dirs:
            (tmp / "images" / d).mkdir(parents=True)
            (tmp / "segmentations" / d).mkdir(parents=True)
        images, labels, splits, boxes = [], [], [], []
        total = np.zeros(3)
        total_sq = np.zeros(3)
        png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        png_image = png + [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
        for image_id, (label, split, index) in enumerate(items, 1):
            rng = np.random.default_rng(np.random.SeedSequence([seed, split, index]))
            image, mask = render_shape(canvas, rng, label, num_classes)
            ys, xs = np.nonzero(mask)
            rel = f"{dirs[label]}/{names[label]}_{image_id:05d}.png"
            ok1, enc_img = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), png_image)
            ok2, enc_mask = cv2.imencode(".png", mask.astype(np.uint8) * 255, png)
            if not (ok1 and ok2):
                raise RuntimeError("PNG encoding failed")
            (tmp / "images" / rel).write_bytes(enc_img.tobytes())
            (tmp / "segmentations" / rel).write_bytes(enc_mask.tobytes())
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {label + 1}")
            splits.append(f"{image_id} {1 if split == 0 else 0}")
            x0, y0 = int(xs.min()), int(ys.min())
            boxes.append(f"{image_id} {x0:.1f} {y0:.1f} {int(xs.max()) + 1 - x0:.1f} {int(ys.max()) + 1 - y0:.1f}")
            if split == 0:
                img_mean, img_std = cv2.meanStdDev(image)
                total += img_mean.ravel() / 255.0
                total_sq += (img_std.ravel() ** 2 + img_mean.ravel() ** 2) / 255.0**2
        mean = total / n_train
        std = np.sqrt(np.maximum(total_sq / n_train - mean * mean, 1e-12))
        for fname, lines in (
            ("images.txt", images),
            ("image_class_labels.txt", labels),
            ("train_test_split.txt", splits),
            ("bounding_boxes.txt", boxes),
            ("classes.txt", [f"{k + 1} {d}" for k, d in enumerate(dirs)]),
        ):
            (tmp / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
        meta = {
            "format": "wsol-shapes",
            "version": FORMAT_VERSION,
            "n_train": n_train,
            "n_test": n_test,
            "size": size,
            "num_classes": num_classes,
            "seed": seed,
            "classes": names,
            "mean": [round(float(v), 6) for v in mean],
            "std": [round(float(v), 6) for v in std],
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(new: Path, target: Path) -> None:
    """Move folder ``new`` to ``target``, replacing an existing folder there with two renames."""
    if not target.exists():
        os.replace(new, target)
        return
    old = temp_dir_beside(target, ".old")
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_shapes_meta(root: Path) -> Dict[str, Any]:
    """The ``shapes.json`` of a generated tree, or a DataError saying how to make one."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; generate the set with `wsol data synth shapes --out {root}`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); regenerate the set") from None
    missing = [k for k in _PARAM_KEYS if k not in meta]
    if missing:
        raise DataError(f"{path} lacks key {missing[0]!r}; regenerate the set")
    return meta


def check_cache_params(**params: int) -> None:
    """Refuse to write a set other than the default into the cache: commands without ``--root``
    regenerate the cache with the defaults, so such a set would be replaced without a word."""
    other = {k: v for k, v in params.items() if DEFAULT_PARAMS[k] != v}
    if other:
        shown = " ".join(f"{option_flag(k)} {v}" for k, v in other.items())
        raise DataError(f"the shapes cache ({default_shapes_root()}) holds only the default set that commands without --root use; "
                        f"write a set with {shown} to a folder of its own with --out DIR and pass --root DIR to the other commands")


def ensure_shapes(
    root: Optional[Path] = None,
    n_train: int = DEFAULT_PARAMS["n_train"],
    n_test: int = DEFAULT_PARAMS["n_test"],
    size: int = DEFAULT_PARAMS["size"],
    num_classes: int = DEFAULT_PARAMS["num_classes"],
    seed: int = DEFAULT_PARAMS["seed"],
) -> Path:
    """Return a shapes tree with these parameters, generating it when missing.

    ``root=None`` uses the cache (``default_shapes_root()``), which is regenerated when its
    parameters differ; a user-given root with other parameters is a DataError, never overwritten.
    """
    wanted = {"version": FORMAT_VERSION, "n_train": n_train, "n_test": n_test, "size": size, "num_classes": num_classes, "seed": seed}
    target = Path(root) if root is not None else default_shapes_root()
    if _is_shapes_tree(target):
        meta = read_shapes_meta(target)
        have = {k: meta[k] for k in _PARAM_KEYS}
        if have == wanted:
            return target
        if root is not None:
            diff = ", ".join(f"{k}={have[k]} (wanted {wanted[k]})" for k in _PARAM_KEYS if have[k] != wanted[k])
            raise DataError(f"{target} holds a shapes set with other parameters: {diff}; pass another root or delete it")
    return synthesize_shapes(target, n_train=n_train, n_test=n_test, size=size, num_classes=num_classes, seed=seed)


@DATASETS.register("shapes")
def build_shapes(root: Path, split: str, transform: Optional[Transform] = None, **options: Any) -> CubDataset:
    """The synthetic set: the CUB loader with native_size and mean/std taken from ``shapes.json``."""
    check_options(load_cub, options, "shapes")
    meta = read_shapes_meta(Path(root))
    options.setdefault("native_size", int(meta["size"]))
    if "mean" in meta and "std" in meta:
        options.setdefault("mean", tuple(meta["mean"]))
        options.setdefault("std", tuple(meta["std"]))
    return load_cub(Path(root), split, transform, dataset_name="shapes", **options)


build_shapes.splits = ("train", "test")  # type: ignore[attr-defined]
DEFAULT_ROOTS["shapes"] = ensure_shapes
