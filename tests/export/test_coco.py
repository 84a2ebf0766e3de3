"""COCO export: results/GT format, pycocotools round trips, validation errors; Markdown/CSV tables."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from wsol.errors import DataError
from wsol.export.coco import (
    coco_eval,
    decode_mask,
    encode_mask,
    gt_annotation,
    gt_to_coco,
    load_results,
    results_to_coco,
    write_results,
)
from wsol.export.tables import csv_text, markdown_table, write_csv


def _masks():
    m1 = np.zeros((20, 30), bool)
    m1[2:10, 5:15] = True
    m2 = np.zeros((16, 16), bool)
    m2[4:12, 3:9] = True
    return m1, m2


def _gt():
    m1, m2 = _masks()
    images = [{"id": 7, "width": 30, "height": 20}, {"id": 9, "width": 16, "height": 16}]
    anns = [gt_annotation(1, 7, 3, [5, 2, 15, 10], m1), gt_annotation(2, 9, 3, [3, 4, 9, 12], m2)]
    return gt_to_coco(images, [{"id": 3, "name": "bird"}], anns)


def test_results_format_and_rle_round_trip():
    m1, m2 = _masks()
    res = results_to_coco([7, 9], [3, 3], np.array([[5, 2, 15, 10], [3.5, 4, 9, 12]]), [0.9, 0.4], masks=[m1, m2])
    assert res[1]["bbox"] == [3.5, 4.0, 5.5, 8.0]  # x y w h from xyxy
    assert isinstance(res[0]["segmentation"]["counts"], str) and res[0]["segmentation"]["size"] == [20, 30]
    assert np.array_equal(decode_mask(res[0]["segmentation"]), m1)
    assert np.array_equal(decode_mask(encode_mask(m2)), m2)
    json.dumps(res)  # plain JSON types only


def test_gt_dict_always_has_info_and_fills_defaults():
    gt = gt_to_coco([{"id": 1, "width": 4, "height": 4}], [{"id": 1}], [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 3]}])
    assert gt["info"] is not None and gt["licenses"] == []
    ann = gt["annotations"][0]
    assert ann["id"] == 1 and ann["area"] == 6.0 and ann["iscrowd"] == 0
    assert _gt()["annotations"][0]["area"] == 80.0  # mask area, 8 × 10


def test_written_file_loads_in_pycocotools_and_evaluates(tmp_path):
    m1, m2 = _masks()
    gt = _gt()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    res = results_to_coco([7, 9], [3, 3], [[5, 2, 15, 10], [3, 4, 9, 12]], [0.9, 0.8], masks=[m1, m2])
    path = write_results(tmp_path / "preds.json", res, {"threshold": 0.2})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads((tmp_path / "preds.meta.json").read_text()) == {"format": "coco-results", "count": 2, "threshold": 0.2, "results_sha256": digest}
    coco = COCO(str(gt_path))
    dt = coco.loadRes(str(path))
    assert sorted(dt.getImgIds()) == [7, 9]
    bbox = coco_eval(gt, load_results(path, known_image_ids=[7, 9]), "bbox")
    segm = coco_eval(gt, res, "segm")
    assert bbox["AP"] == pytest.approx(1.0) and segm["AP"] == pytest.approx(1.0)
    shifted = results_to_coco([7], [3], [[10, 2, 20, 10]], [0.9])  # IoU 40/120 with image 7's box
    assert coco_eval(gt, shifted, "bbox")["AP50"] == pytest.approx(0.0)
    assert res[0]["bbox"] == [5.0, 2.0, 10.0, 8.0]  # coco_eval did not mutate the caller's list


def test_empty_results_score_zero_instead_of_crashing():
    stats = coco_eval(_gt(), [], "bbox")
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_coco_eval_rejects_unknown_image_ids():
    with pytest.raises(DataError, match="not in the ground truth"):
        coco_eval(_gt(), results_to_coco([8], [3], [[0, 0, 2, 2]], [0.5]), "bbox")


def test_load_results_errors(tmp_path):
    good = tmp_path / "preds.json"
    write_results(good, results_to_coco([7, 42], [3, 3], [[0, 0, 2, 2], [0, 0, 2, 2]], [0.5, 0.5]))
    with pytest.raises(DataError, match=r"1 image id\(s\) not in the dataset \(42\)"):
        load_results(good, known_image_ids=[7, 9])
    with pytest.raises(DataError, match="does not exist"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="JSON list"):
        load_results(bad)
    bad.write_text(json.dumps([{"image_id": 7, "category_id": 3, "score": 0.5, "bbox": [0, 0, -1, 2]}]))
    with pytest.raises(DataError, match="entry 0"):
        load_results(bad)


def test_markdown_and_csv_tables(tmp_path):
    rows = [{"method": "ART", "acc": 77.514, "loc": 65.2}, {"method": "natural|x", "acc": float("nan")}]
    md = markdown_table(rows, ["method", "acc", "loc"])
    assert md.splitlines() == [
        "| method | acc | loc |",
        "|---|---:|---:|",
        "| ART | 77.51 | 65.20 |",
        "| natural\\|x | – |  |",
    ]
    path = write_csv(tmp_path / "t.csv", rows)
    with open(path, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert back[0] == {"method": "ART", "acc": "77.514", "loc": "65.2"} and back[1]["loc"] == ""
    assert back[1]["acc"] == ""  # NaN (undefined) is an empty cell, as None is: pandas and spreadsheets read both as missing


def test_csv_cells_of_undefined_values_are_empty():
    rows = [{"a": float("nan"), "b": np.float32("nan"), "c": None, "d": float("inf"), "e": 0.1, "f": False, "g": "nan"}]
    assert csv_text(rows) == "a,b,c,d,e,f,g\n,,,inf,0.1,False,nan\n"  # the text "nan" is a value, not a number
    assert csv_text([{"e": 0.1, "a": None}], ["e", "a"], header=False) == "0.1,\n"


def test_csv_columns_are_the_header_a_key_outside_them_is_refused_not_dropped():
    """Rows appended to a file whose header is ``columns``: a key a row has beyond them used to vanish from the file
    unseen (DictWriter's extrasaction="ignore"); it is a caller's bug, so it raises. A key a row lacks is an empty cell."""
    assert csv_text([{"a": 1}, {"b": 2}], ["a", "b"]) == "a,b\n1,\n,2\n"
    with pytest.raises(ValueError, match=r"keys \['c'\] outside its columns \['a', 'b'\]"):
        csv_text([{"a": 1, "b": 2, "c": 3}], ["a", "b"], header=False)
