"""Exports: COCO results/GT JSON with a quiet COCOeval, and Markdown/CSV tables."""
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
from wsol.export.tables import markdown_table, write_csv

__all__ = [
    "coco_eval",
    "decode_mask",
    "encode_mask",
    "gt_annotation",
    "gt_to_coco",
    "load_results",
    "markdown_table",
    "results_to_coco",
    "write_csv",
    "write_results",
]
