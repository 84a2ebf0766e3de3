"""Shared fixtures for the training tests: a tiny in-memory dataset of Samples."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from wsol.data.sample import Sample


class ToySet(Dataset):
    """``n`` seeded 3-channel images whose class brightens one channel of the top half."""

    def __init__(self, n: int, size: int = 16, classes: int = 3, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = [i % classes for i in range(n)]
        self.images = torch.rand(n, 3, size, size, generator=gen) * 0.5
        for i, label in enumerate(self.labels):
            self.images[i, label % 3, : size // 2] += 0.5
        self.class_names = [f"class{i}" for i in range(classes)]
        self.num_classes = classes
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.25, 0.25, 0.25)
        self.native_size = size
        self.has_masks = False

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Sample:
        return Sample(image=self.images[index].clone(), label=self.labels[index], image_id=index)


@pytest.fixture
def toy_sets():
    """A factory: ``toy_sets(n_train, n_test, size)`` → (train, test)."""

    def make(n_train: int = 24, n_test: int = 12, size: int = 16, classes: int = 3):
        return ToySet(n_train, size, classes, seed=0), ToySet(n_test, size, classes, seed=1)

    return make
