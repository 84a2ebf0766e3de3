"""Partially annotated sets (Flowers: a trimap or segmentation for some images): box and mask metrics are over the
images that have them, Top-1 Acc over all, and every count is stated; a fully annotated set scores as before."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch import nn

from wsol.cli import run
from wsol.data import Batch, Sample, collate
from wsol.jobs.localize import MapMetrics
from wsol.metrics.localization import BoxEvaluator
from wsol.metrics.intervals import wilson_interval
from wsol.metrics.segmentation import PxAPEvaluator, SegmentationEvaluator
from wsol.models import build_model, save_model

SIZE = 32
FLOWER = (6, 26, 4, 28)  # rows 6..25, cols 4..27: the trimaps' flower and the model's gradient
TEST = [1, 2, 3, 81, 82, 161]  # labels 0, 0, 0, 1, 1, 2
MASKED = [1, 2, 81, 161]  # in trimaps/imlist.mat; 3 and 82 have no trimap


class Linear(nn.Module):
    """logit_c = Σ w·x + b_c with one weight pattern for every class: its gradient map is the flower rectangle
    whatever the image, and class 0 is always predicted (right on images 1, 2, 3, wrong on 81, 82, 161)."""

    num_classes = 17
    input_size = SIZE

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(1, 3, SIZE, SIZE)
        w[..., FLOWER[0]:FLOWER[1], FLOWER[2]:FLOWER[3]] = 1e-3
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(torch.cat([torch.tensor([100.0]), torch.zeros(16)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3))[:, None] + self.b


def _flowers17(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "jpg").mkdir(parents=True)
    (root / "trimaps").mkdir()
    for i in TEST + [4]:
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "jpg" / f"image_{i:04d}.jpg", quality=95)
    splits = {f"{p}{f}": v for f in (1, 2, 3) for p, v in (("trn", [4]), ("val", [4]), ("tst", TEST))}
    scipy.io.savemat(str(root / "datasplits.mat"), {k: np.asarray(v, np.float64).reshape(1, -1) for k, v in splits.items()})
    scipy.io.savemat(str(root / "trimaps" / "imlist.mat"), {"imlist": np.asarray(MASKED, np.float64).reshape(1, -1)})
    for i in MASKED:  # palette trimaps: 0 background, 2 boundary band, 1 flower
        codes = np.zeros((SIZE, SIZE), np.uint8)
        codes[FLOWER[0] - 2:FLOWER[1] + 2, FLOWER[2] - 2:FLOWER[3] + 2] = 2
        codes[FLOWER[0]:FLOWER[1], FLOWER[2]:FLOWER[3]] = 1
        im = Image.fromarray(codes)
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
        im.save(root / "trimaps" / f"image_{i:04d}.png")


@pytest.fixture(scope="module")
def flowers(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("flowers")
    _flowers17(base / "f17")
    checkpoint = save_model(build_model("small-cnn", 17, input_size=SIZE), base / "model", dataset="flowers17", method="natural")
    return {"base": base, "root": base / "f17", "checkpoint": checkpoint}


def _localize_and_evaluate(flowers: dict, name: str, monkeypatch, capsys, *options: str) -> tuple:
    monkeypatch.setattr("wsol.jobs.localize.load_model", lambda path: Linear())
    out = flowers["base"] / f"{name}.json"
    common = ["--dataset", "flowers17", "--root", str(flowers["root"]), *options]
    assert run(["localize", "--checkpoint", str(flowers["checkpoint"]), "--out", str(out), "--sweep", "--masks", "--batch-size", "2", *common]) == 0
    localized = capsys.readouterr().out
    assert run(["evaluate", "--pred", str(out), *common]) == 0
    table = capsys.readouterr().out
    return json.loads(out.with_suffix(".meta.json").read_text()), json.loads(out.with_suffix(".metrics.json").read_text()), localized, table


def test_unmasked_flowers_count_in_top1_acc_alone_and_every_count_is_stated(flowers, monkeypatch, capsys) -> None:
    meta, metrics, localized, table = _localize_and_evaluate(flowers, "partial", monkeypatch, capsys)
    assert metrics["top1_acc"] == pytest.approx(50.0)  # 1, 2, 3 of the 6 right
    assert metrics["gt_known_loc"] == pytest.approx(100.0)  # every masked image's box found; 3 and 82 are no misses (it read 66.67)
    assert metrics["top1_loc"] == pytest.approx(50.0) and metrics["top1_seg"] == pytest.approx(50.0)  # 1 and 2 of the 4 masked
    assert metrics["images"] == 6 and metrics["images_with_box"] == 4 and metrics["images_with_mask"] == 4
    assert metrics["coco_bbox_ap50"] == pytest.approx(metrics["coco_segm_ap50"])
    for key in ("miou", "coco_segm_ap", "best_top1_seg", "best_miou", "pxap"):  # were left out: not every image had a mask
        assert key in metrics
    assert meta["map_metrics"]["maxboxacc_v2"] == pytest.approx(100.0) and meta["map_metrics"]["best_gt_known_loc"] == pytest.approx(100.0)
    assert meta["map_metrics"]["best_top1_loc"] == pytest.approx(50.0) and meta["map_metrics"]["best_top1_seg"] == pytest.approx(50.0)
    assert {k: metrics["over"][k] for k in ("top1_acc", "gt_known_loc", "top1_seg", "maxboxacc_v2", "pxap", "coco_bbox_ap")} == {
        "top1_acc": 6, "gt_known_loc": 4, "top1_seg": 4, "maxboxacc_v2": 4, "pxap": 4, "coco_bbox_ap": 4}
    assert metrics["intervals"]["top1_acc"] == pytest.approx([100 * b for b in wilson_interval(3, 6)])
    assert metrics["intervals"]["top1_loc"] == pytest.approx([100 * b for b in wilson_interval(2, 4)])
    assert metrics["intervals"]["gt_known_loc"] == pytest.approx([100 * b for b in wilson_interval(4, 4)])
    assert "each score is over (see over)" in metrics["interval"]
    assert "(6 images, 4 with a box, 4 with a mask, threshold" in localized
    assert "| top1_seg | 50.00 | % | 4 of 6 with a mask |" in table and "| top1_acc | 50.00 | % | all 6 |" in table


def test_the_masked_images_score_as_the_segmented_only_split(flowers, monkeypatch, capsys) -> None:
    """The metrics over the masked images are those of `-o segmented_only=true` (which keeps only them), whatever the batches."""
    _, partial, _, _ = _localize_and_evaluate(flowers, "partial2", monkeypatch, capsys)
    meta, alone, _, _ = _localize_and_evaluate(flowers, "segmented", monkeypatch, capsys, "-o", "segmented_only=true")
    for key in ("gt_known_loc", "top1_loc", "top1_seg", "miou", "coco_bbox_ap", "coco_segm_ap", *meta["map_metrics"]):
        assert partial.get(key) == pytest.approx(alone[key]), key
    assert alone["images"] == alone["images_with_box"] == alone["images_with_mask"] == 4


def _batch(boxes: list, masks: list) -> Batch:
    return collate([Sample(torch.zeros(3, 8, 8), label=i % 2, boxes=b, mask=m, image_id=i) for i, (b, m) in enumerate(zip(boxes, masks))])


def test_map_metrics_score_the_annotated_images_as_the_evaluators_do() -> None:
    """A fully annotated batch feeds the evaluators as it always did; a partial one feeds them its annotated rows only."""
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((4, 8, 8)).astype(np.float32))
    pred = torch.tensor([0, 0, 0, 0])
    box = [torch.tensor([[1.0, 1.0, 6.0, 5.0]]), torch.tensor([[0.0, 2.0, 4.0, 8.0]]), torch.tensor([[2.0, 0.0, 8.0, 7.0]]), torch.tensor([[3.0, 3.0, 5.0, 5.0]])]
    mask = [torch.from_numpy(rng.random((8, 8)) > 0.5) for _ in range(4)]
    thresholds = np.linspace(0, 0.95, 20)
    for keep in ([0, 1, 2, 3], [0, 2]):
        boxes = [b if i in keep else torch.zeros(0, 4) for i, b in enumerate(box)]
        masks = [m if i in keep else None for i, m in enumerate(mask)]
        got = MapMetrics(thresholds, with_masks=True)
        got.accumulate(_batch(boxes, masks), maps, pred)
        correct = np.array([True, False, True, False])[keep]
        v2, largest = BoxEvaluator(thresholds, (30, 50, 70), mode="all"), BoxEvaluator(thresholds, (50,), mode="largest")
        seg, pxap = SegmentationEvaluator(thresholds), PxAPEvaluator(thresholds)
        for ev in (v2, largest):
            ev.accumulate(maps[keep], [box[i].numpy() for i in keep], correct)
        seg.accumulate(maps[keep], torch.stack([mask[i] for i in keep]).numpy(), correct)
        pxap.accumulate(maps[keep], torch.stack([mask[i] for i in keep]).numpy())
        assert got.states() == {"v2": v2.state_dict(), "largest": largest.state_dict(), "seg": seg.state_dict(), "pxap": pxap.state_dict()}
        assert got.summary()["images_with_box"] == got.summary()["images_with_mask"] == len(keep)
    nothing = MapMetrics(thresholds, with_masks=True)
    nothing.accumulate(_batch([torch.zeros(0, 4)] * 2, [None, None]), maps[:2], pred[:2])
    assert nothing.summary() == {}  # a batch with no annotation counts nowhere (it did: as misses, when a batch mate had a box)
