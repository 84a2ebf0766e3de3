"""Checkpoint safety: refused pickles, atomic writes, training-state round trip."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from wsol.errors import CheckpointError
from wsol.models import build_model, load_model, save_model
from wsol.models.checkpoint import load_state_file, load_train_state, save_train_state
from wsol.utils.io import atomic_write_bytes


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_needs_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weight": _Payload()}, fh)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_state_file(path)
    with pytest.raises(CheckpointError, match="needs code"):
        build_model("small-cnn", 3, weights=path)


def test_train_state_round_trip_is_weights_only(tmp_path) -> None:
    model = build_model("small-cnn", 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    opt.step()
    save_train_state(tmp_path / "state.pt", {"optimizer": opt.state_dict(), "epoch": 4})
    state = load_train_state(tmp_path / "state.pt")
    assert state["epoch"] == 4
    fresh = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(state["optimizer"])


def test_atomic_write_leaves_no_partial_file_on_crash(tmp_path, monkeypatch) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old contents")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new contents that never land")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_checkpoint_crash_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model = build_model("small-cnn", 3)
    path = save_model(model, tmp_path / "model", epoch=1)
    before = path.read_bytes()
    import safetensors.torch

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(RuntimeError):
        save_model(build_model("small-cnn", 3), tmp_path / "model", epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_a_plain_pickle_is_refused_without_torchs_protocol_warning(tmp_path) -> None:
    """torch warns about a protocol-4 pickle before refusing it; that warning would be a second stderr line before the error."""
    import warnings

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weight": _Payload()}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="needs code to unpickle"):
            load_state_file(path)
    assert [str(w.message) for w in caught] == []


def test_a_file_that_is_no_pytorch_file_is_named_so(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    for text in ('{"not": "weights"}', "hi\n", "hello world\n"):  # the last two fail in torch.load with KeyError 105 / 101
        path.write_text(text)
        with pytest.raises(CheckpointError, match=r"is not a PyTorch weights file \(.pt/.pth\)$"):
            load_state_file(path)


def test_a_json_file_is_not_read_as_weights(tmp_path) -> None:
    """The sidecar (tab completion picks it) and a predictions list name the weights file, not a pickle error."""
    path = save_model(build_model("small-cnn", 3), tmp_path / "model")
    with pytest.raises(CheckpointError, match=f"pass the weights file beside it, {path}"):
        load_model(path.with_suffix(".json"))
    preds = tmp_path / "preds.json"
    preds.write_text("[]")
    with pytest.raises(CheckpointError, match="is a JSON file, not model weights"):
        build_model("small-cnn", 3, weights=preds)
