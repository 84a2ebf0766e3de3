"""Datasets: every loader returns :class:`Sample` records; see ``build_dataset``."""
from wsol.data.registry import DATASETS, build_dataset
from wsol.data.sample import Batch, Sample, collate

__all__ = ["DATASETS", "build_dataset", "Batch", "Sample", "collate"]
