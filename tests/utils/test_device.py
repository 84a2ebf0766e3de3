"""Device names are checked up front: one-line errors for unknown names and for CUDA that is absent."""
from __future__ import annotations

import pytest
import torch

from wsol.errors import WsolError
from wsol.utils.device import resolve_device, select_device


@pytest.mark.parametrize("name", ["bogus", "gpu", "cuda:x", "cpu:0:1", "CUDA", ""])
def test_unknown_names_are_refused(name) -> None:
    with pytest.raises(WsolError, match=f"unknown device {name!r}; use cpu, cuda or cuda:N"):
        resolve_device(name)


def test_cuda_without_a_gpu_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(WsolError, match="CUDA is not available; use --device cpu"):
            resolve_device(name)
    assert select_device(None) == torch.device("cpu") == select_device("auto")


def test_missing_cuda_index_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(WsolError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


def test_cpu_is_accepted() -> None:
    assert resolve_device("cpu") == torch.device("cpu") == select_device("cpu")
