"""Check a dataset tree (counts, missing and corrupt files) and draw a grid of samples with boxes and masks."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from wsol.data.base import check_boxes, probe_image
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
        "has_some_masks": bool(getattr(dataset, "has_some_masks", getattr(dataset, "has_masks", False))),
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
            boxes_wrong = box_problem(record)
            if boxes_wrong is not None:
                report["corrupt"].append(boxes_wrong)
    else:
        for index in range(len(dataset)):
            try:
                dataset[index]
            except DataError as err:
                report["corrupt"].append(f"item {index}: {err}")
    return report


def box_problem(record: Any) -> Optional[str]:
    """Why the record's GT boxes do not fit its image (read from the file header), or None."""
    boxes = getattr(record, "boxes", None)
    if boxes is None or len(boxes) == 0:
        return None
    from PIL import Image

    try:
        with Image.open(record.image_path) as image:
            width, height = image.size
    except (OSError, ValueError):
        return None  # the file itself is reported as missing or corrupt
    try:
        check_boxes(boxes, height, width, f"{record.image_path}")
    except DataError as err:
        return str(err)
    return None


def verify_dataset(
    name: str,
    root: Union[str, Path],
    splits: Optional[Sequence[str]] = None,
    check_files: bool = True,
    **options: Any,
) -> Dict[str, Any]:
    """Build every split of dataset ``name`` at ``root`` and report counts and unusable files.

    Returns ``{"name", "root", "splits": {split: {count, num_classes, has_masks, has_some_masks, per_class, missing,
    corrupt, skipped}}, "problems"}`` where ``problems`` counts missing and corrupt files and empty
    splits. Without ``skip_corrupt`` every unusable file is listed (the loaders are asked to skip
    them so that one missing image does not hide the others); with ``skip_corrupt=True`` images
    the loader leaves out are listed under ``skipped`` only. A malformed tree raises the loader's DataError. When the
    loader does not declare its splits, 'train', 'val' and 'test' are tried and a split the loader
    rejects by name is left out.
    """
    from wsol.data.registry import build_dataset, load_all

    factory = load_all().get(name)
    declared = getattr(factory, "splits", None)
    wanted = list(splits or declared or _GUESSED_SPLITS)
    report: Dict[str, Any] = {"name": name, "root": str(root), "splits": {}, "problems": 0}
    listing = "skip_corrupt" not in options
    for split in wanted:
        try:
            dataset = build_dataset(name, root, split, **({**options, "skip_corrupt": True} if listing else options))
        except DataError as err:
            if splits is None and declared is None and split in str(err) and "split" in str(err):
                continue
            raise
        info = _split_report(dataset, check_files)
        if listing:
            for entry in info.pop("skipped"):
                file, _, problem = entry.rpartition(": ")
                if problem == "missing":
                    info["missing"].append(file)
                else:
                    info["corrupt"].append(entry)
            info["skipped"] = []
        report["splits"][split] = info
        report["problems"] += len(info["missing"]) + len(info["corrupt"]) + (info["count"] == 0)
    if not report["splits"]:
        raise DataError(f"no split of dataset {name!r} could be read from {root}")
    return report


def _masks_cell(info: Dict[str, Any]) -> str:
    """The masks column: yes (every image has one), some (Flowers: the masks and scores cover those images), no."""
    return "yes" if info["has_masks"] else "some" if info.get("has_some_masks") else "no"


def format_report(report: Dict[str, Any], max_listed: int = 20) -> str:
    """A plain-text table of a ``verify_dataset`` report, with the first problem files listed."""
    header = f"{'split':<8}{'images':>9}{'classes':>9}{'min/class':>11}{'max/class':>11}{'masks':>7}{'missing':>9}{'corrupt':>9}{'skipped':>9}"
    lines = [f"dataset {report['name']} at {report['root']}", header, "-" * len(header)]
    for split, info in report["splits"].items():
        per = list(info["per_class"].values()) or [0]
        lines.append(
            f"{split:<8}{info['count']:>9}{info['num_classes']:>9}{min(per):>11}{max(per):>11}"
            f"{_masks_cell(info):>7}{len(info['missing']):>9}{len(info['corrupt']):>9}{len(info['skipped']):>9}"
        )
    for split, info in report["splits"].items():
        problems = ["empty: no images in this split"] if info["count"] == 0 else []
        problems += [f"missing: {p}" for p in info["missing"]] + [f"corrupt: {p}" for p in info["corrupt"]]
        problems += [f"skipped: {p}" for p in info["skipped"]]
        for line in problems[:max_listed]:
            lines.append(f"[{split}] {line}")
        if len(problems) > max_listed:
            lines.append(f"[{split}] ... and {len(problems) - max_listed} more")
    return "\n".join(lines)


def show_grid(dataset: Any, n: int, out_png: Union[str, Path], seed: int = 0) -> Path:
    """Draw ``n`` random samples (chosen with ``seed``) with GT boxes and masks into one PNG, atomically.

    Drawn by :func:`wsol.report.figures.draw_overlay_grid`, titled ``label:class name``.
    """
    from wsol.report.figures import draw_overlay_grid, save_figure

    if len(dataset) == 0:
        raise DataError("the dataset is empty; nothing to show")
    if n < 1:
        raise DataError(f"n must be at least 1, got {n}")
    count = min(int(n), len(dataset))
    picks = np.random.default_rng(seed).choice(len(dataset), size=count, replace=False)
    samples = [dataset[int(i)] for i in picks]
    names = list(dataset.class_names)
    titles = [f"{int(s.label)}:{names[int(s.label)]}" if 0 <= int(s.label) < len(names) else str(int(s.label)) for s in samples]
    fig = draw_overlay_grid(
        [s.image for s in samples],
        gt_boxes=[s.boxes for s in samples],
        masks=[s.mask for s in samples],
        titles=titles,
        columns=int(math.ceil(math.sqrt(count))),
        title=f"{count} random {' '.join(filter(None, [getattr(dataset, 'split', ''), 'images']))} (title: label:class name)",
    )
    return save_figure(fig, Path(out_png))


def parse_loader_options(items: Sequence[str]) -> Dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into loader options (ints, floats and true/false are converted). A key given twice
    with two values (``-o severity=3 -o severity=5``) is refused rather than the first silently dropped."""
    from wsol.errors import ConfigError, check_given_once

    options: Dict[str, Any] = {}
    given: Dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ConfigError(f"loader option {item!r} must look like KEY=VALUE, e.g. metadata=/data/metadata/CUB")
        check_given_once(given, key, raw, "loader option", "option")
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
