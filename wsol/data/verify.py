"""Check a dataset tree (counts, missing and corrupt files) and draw a grid of samples with boxes and masks."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from wsol.data.base import probe_image
from wsol.data.registry import default_root
from wsol.errors import DataError

_GUESSED_SPLITS = ("train", "val", "test")


def _split_report(dataset: Any, check_files: bool) -> Dict[str, Any]:
    """Counts and file problems for one built split."""
    labels = list(dataset.labels)
    names = list(dataset.class_names)
    counts = Counter(labels)
    report: Dict[str, Any] = {
        "count": len(dataset),
        "num_classes": int(dataset.num_classes),
        "has_masks": bool(getattr(dataset, "has_masks", False)),
        "per_class": {names[k] if 0 <= k < len(names) else str(k): int(counts.get(k, 0)) for k in range(len(names))},
        "missing": [],
        "corrupt": [],
        "skipped": [str(s) for s in getattr(dataset, "skipped", [])],
    }
    outside = [k for k in counts if not 0 <= k < len(names)]
    if outside:
        report["corrupt"].append(f"labels outside 0..{len(names) - 1}: {sorted(outside)[:5]}")
    if not check_files:
        return report
    records = getattr(dataset, "records", None)
    if records is not None and all(getattr(r, "image_path", None) is not None for r in records):
        mask_files = getattr(dataset, "mask_files", None)
        for record in records:
            masks = mask_files(record) if callable(mask_files) else [getattr(record, "mask_path", None)]
            for path in [record.image_path, *masks]:
                if path is None:
                    continue
                problem = probe_image(path)
                if problem == "missing":
                    report["missing"].append(str(path))
                elif problem is not None:
                    report["corrupt"].append(f"{path}: {problem}")
    else:
        for index in range(len(dataset)):
            try:
                dataset[index]
            except DataError as err:
                report["corrupt"].append(f"item {index}: {err}")
    return report


def verify_dataset(
    name: str,
    root: Union[str, Path],
    splits: Optional[Sequence[str]] = None,
    check_files: bool = True,
    **options: Any,
) -> Dict[str, Any]:
    """Build every split of dataset ``name`` at ``root`` and report counts and unusable files.

    Returns ``{"name", "root", "splits": {split: {count, num_classes, has_masks, per_class, missing,
    corrupt, skipped}}, "problems"}`` where ``problems`` counts missing and corrupt files (images a
    loader skipped on purpose are listed under ``skipped`` only). A malformed tree raises the loader's DataError. When the
    loader does not declare its splits, 'train', 'val' and 'test' are tried and a split the loader
    rejects by name is left out.
    """
    from wsol.data.registry import build_dataset, load_all

    factory = load_all().get(name)
    declared = getattr(factory, "splits", None)
    wanted = list(splits or declared or _GUESSED_SPLITS)
    report: Dict[str, Any] = {"name": name, "root": str(root), "splits": {}, "problems": 0}
    for split in wanted:
        try:
            dataset = build_dataset(name, root, split, **options)
        except DataError as err:
            if splits is None and declared is None and split in str(err) and "split" in str(err):
                continue
            raise
        info = _split_report(dataset, check_files)
        report["splits"][split] = info
        report["problems"] += len(info["missing"]) + len(info["corrupt"])
    if not report["splits"]:
        raise DataError(f"no split of dataset {name!r} could be read from {root}")
    return report


def format_report(report: Dict[str, Any], max_listed: int = 20) -> str:
    """A plain-text table of a ``verify_dataset`` report, with the first problem files listed."""
    header = f"{'split':<8}{'images':>9}{'classes':>9}{'min/class':>11}{'max/class':>11}{'masks':>7}{'missing':>9}{'corrupt':>9}{'skipped':>9}"
    lines = [f"dataset {report['name']} at {report['root']}", header, "-" * len(header)]
    for split, info in report["splits"].items():
        per = list(info["per_class"].values()) or [0]
        lines.append(
            f"{split:<8}{info['count']:>9}{info['num_classes']:>9}{min(per):>11}{max(per):>11}"
            f"{'yes' if info['has_masks'] else 'no':>7}{len(info['missing']):>9}{len(info['corrupt']):>9}{len(info['skipped']):>9}"
        )
    for split, info in report["splits"].items():
        problems = [f"missing: {p}" for p in info["missing"]] + [f"corrupt: {p}" for p in info["corrupt"]]
        problems += [f"skipped: {p}" for p in info["skipped"]]
        for line in problems[:max_listed]:
            lines.append(f"[{split}] {line}")
        if len(problems) > max_listed:
            lines.append(f"[{split}] ... and {len(problems) - max_listed} more")
    return "\n".join(lines)


def _draw_cell(sample: Any, class_names: List[str], cell: int) -> np.ndarray:
    """One grid cell: the image scaled to fit ``cell``, mask tinted green, boxes in red, label on top."""
    import cv2

    image = (sample.image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    h, w = image.shape[:2]
    scale = cell / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = cv2.INTER_NEAREST if scale >= 2 else cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    shown = cv2.resize(image, (nw, nh), interpolation=interp)
    if sample.mask is not None:
        mask = cv2.resize(sample.mask.cpu().numpy().astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
        tint = np.array([0, 255, 0], dtype=np.float32)
        shown[mask] = (0.6 * shown[mask] + 0.4 * tint).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(shown, contours, -1, (0, 200, 0), 1)
    for box in sample.boxes.reshape(-1, 4).tolist():
        x1, y1, x2, y2 = (v * scale for v in box)
        cv2.rectangle(shown, (int(round(x1)), int(round(y1))), (max(int(round(x2)) - 1, 0), max(int(round(y2)) - 1, 0)), (255, 40, 40), 1)
    canvas = np.full((cell + 14, cell, 3), 255, dtype=np.uint8)
    canvas[14 : 14 + nh, :nw] = shown
    label = int(sample.label)
    text = class_names[label] if 0 <= label < len(class_names) else str(label)
    cv2.putText(canvas, f"{label}:{text}"[: max(4, cell // 7)], (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def show_grid(dataset: Any, n: int, out_png: Union[str, Path], seed: int = 0, cell: Optional[int] = None) -> Path:
    """Draw ``n`` random samples (chosen with ``seed``) with GT boxes and masks into one PNG, atomically."""
    import cv2

    from wsol.utils.io import atomic_write_bytes

    if len(dataset) == 0:
        raise DataError("the dataset is empty; nothing to show")
    if n < 1:
        raise DataError(f"n must be at least 1, got {n}")
    count = min(int(n), len(dataset))
    picks = np.random.default_rng(seed).choice(len(dataset), size=count, replace=False)
    samples = [dataset[int(i)] for i in picks]
    if cell is None:
        largest = max(max(s.image.shape[-2:]) for s in samples)
        cell = int(min(256, max(128, largest)))
    cells = [_draw_cell(s, list(dataset.class_names), cell) for s in samples]
    cols = int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / cols))
    ch, cw = cells[0].shape[:2]
    pad = 4
    grid = np.full((rows * (ch + pad) + pad, cols * (cw + pad) + pad, 3), 255, dtype=np.uint8)
    for k, tile in enumerate(cells):
        r, c = divmod(k, cols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y : y + ch, x : x + cw] = tile
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    out = Path(out_png)
    atomic_write_bytes(out, encoded.tobytes())
    return out


def parse_loader_options(items: Sequence[str]) -> Dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into loader options (ints, floats and true/false are converted)."""
    from wsol.errors import ConfigError

    options: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ConfigError(f"loader option {item!r} must look like KEY=VALUE, e.g. metadata=/data/metadata/CUB")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for convert in (int, float):
                try:
                    value = convert(raw)
                    break
                except ValueError:
                    continue
        options[key] = value
    return options


def resolve_root(name: str, root: Optional[Union[str, Path]]) -> Path:
    """The dataset root: as given, or the dataset's registered default (the shapes cache for ``shapes``)."""
    from wsol.errors import ConfigError

    if root is not None:
        return Path(root)
    found = default_root(name)
    if found is not None:
        return found
    raise ConfigError(f"dataset {name!r} needs --root DIR (the folder holding its files; see datasets/README.md)")
