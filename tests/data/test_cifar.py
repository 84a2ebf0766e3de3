"""CIFAR-10 pickle batches and CIFAR-10-C arrays, written in their on-disk formats."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from wsol.data import build_dataset, collate
from wsol.data.cifar import safe_load_pickle
from wsol.errors import ConfigError, DataError

NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _batch(labels, seed, marker=None):
    """A batch dict as the CIFAR authors stored it (bytes keys, N×3072 uint8 rows)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    if marker is not None:
        # Row layout: R plane, then G plane, then B plane, each 32×32 row-major.
        # Pixel (y=1, x=2) of image 0 gets the colour ``marker``.
        for c in range(3):
            data[0, c * 1024 + 1 * 32 + 2] = marker[c]
    return {
        b"batch_label": b"training batch",
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


def _write(path: Path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_cifar(root: Path, protocol=pickle.HIGHEST_PROTOCOL) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    _write(base / "batches.meta", {b"label_names": NAMES, b"num_cases_per_batch": 2, b"num_vis": 3072}, protocol)
    for i in range(1, 6):
        marker = (200, 100, 50) if i == 2 else None
        _write(base / f"data_batch_{i}", _batch([i - 1, 9 - i], seed=i, marker=marker), protocol)
    _write(base / "test_batch", _batch([3, 1, 4], seed=9, marker=(7, 8, 9)), protocol)
    return base


def test_cifar10_train_and_test(tmp_path):
    make_cifar(tmp_path)
    train = build_dataset("cifar10", tmp_path, "train")
    assert len(train) == 10
    assert train.labels == [0, 8, 1, 7, 2, 6, 3, 5, 4, 4]
    assert train.class_names[3] == "cat" and train.num_classes == 10
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)
    assert train.native_size == 32 and train.has_masks is False and train.skipped == []
    sample = train[2]  # first image of data_batch_2
    assert sample.name == "data_batch_2[0]" and sample.image_id == 3 and sample.label == 1
    assert sample.image.shape == (3, 32, 32) and sample.image.dtype == torch.float32
    assert torch.equal((sample.image[:, 1, 2] * 255).round(), torch.tensor([200.0, 100.0, 50.0]))
    assert sample.boxes.shape == (0, 4) and sample.mask is None and sample.orig_size == (32, 32)
    assert [train[i].image_id for i in range(10)] == list(range(1, 11))
    test = build_dataset("cifar10", tmp_path, "test")
    assert len(test) == 3 and test.labels == [3, 1, 4]
    assert torch.equal((test[0].image[:, 1, 2] * 255).round(), torch.tensor([7.0, 8.0, 9.0]))
    assert test[-1].name == "test_batch[2]"
    batch = collate([test[0], test[1]])
    assert batch.images.shape == (2, 3, 32, 32) and batch.labels.tolist() == [3, 1]


def test_cifar10_other_full_pixel_layout(tmp_path):
    base = make_cifar(tmp_path)
    with open(base / "test_batch", "rb") as f:
        raw = pickle.load(f)
    ds = build_dataset("cifar10", tmp_path, "test")
    row = raw[b"data"][1]
    img = (ds[1].image * 255).round().to(torch.uint8).numpy()
    for c, y, x in [(0, 0, 0), (1, 31, 0), (2, 5, 31), (0, 17, 9)]:
        assert img[c, y, x] == row[c * 1024 + y * 32 + x]


def test_cifar10_root_itself_and_protocol2(tmp_path):
    base = make_cifar(tmp_path, protocol=2)  # Python-3 protocol 2 stores bytes via _codecs.encode
    ds = build_dataset("cifar10", base, "test")
    assert ds.labels == [3, 1, 4]
    assert torch.equal((ds[0].image[:, 1, 2] * 255).round(), torch.tensor([7.0, 8.0, 9.0]))


def _py2_batch_pickle(data: np.ndarray, labels) -> bytes:
    """A batch pickled as Python 2 wrote the CIFAR files: str as BINSTRING, numpy.core globals."""

    def string(b: bytes) -> bytes:
        return b"T" + len(b).to_bytes(4, "little") + b

    def small_int(v: int) -> bytes:
        return b"M" + v.to_bytes(2, "little")

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
        + b"(K\x01" + small_int(data.shape[0]) + small_int(data.shape[1]) + b"\x86"
        + b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89" + string(data.tobytes()) + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."


def test_cifar10_python2_pickle(tmp_path):
    base = make_cifar(tmp_path)
    data = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8)
    (base / "test_batch").write_bytes(_py2_batch_pickle(data, [5, 9]))
    ds = build_dataset("cifar10", tmp_path, "test")
    assert ds.labels == [5, 9]
    img = (ds[1].image * 255).round().to(torch.uint8).numpy()
    assert img[2, 3, 4] == (3072 + 2 * 1024 + 3 * 32 + 4) % 256


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_forbidden_global_is_refused_without_running(tmp_path):
    base = make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = _batch([1, 2], seed=0)
    evil[b"data"] = _Evil(marker)
    _write(base / "data_batch_3", evil)
    with pytest.raises(DataError, match=r"data_batch_3.*system"):
        build_dataset("cifar10", tmp_path, "train")
    assert not marker.exists()
    _write(base / "batches.meta", {b"label_names": NAMES, b"x": _Evil(marker)})
    with pytest.raises(DataError, match="batches.meta"):
        build_dataset("cifar10", tmp_path, "test")
    assert not marker.exists()


def test_pickle_codecs_only_latin1(tmp_path):
    path = tmp_path / "p"
    # Hand-written protocol-2 pickle: _codecs.encode('abc', 'rot13').
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DataError, match="rot13"):
        safe_load_pickle(path)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00latin1\x86R.")
    assert safe_load_pickle(path) == b"abc"
    path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R.")
    with pytest.raises(DataError, match="builtins.eval"):
        safe_load_pickle(path)


def test_cifar10_errors(tmp_path):
    base = make_cifar(tmp_path)
    (base / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        build_dataset("cifar10", tmp_path, "train")
    _write(base / "data_batch_4", _batch([1, 10], seed=4))
    with pytest.raises(DataError, match=r"data_batch_4.*label 10"):
        build_dataset("cifar10", tmp_path, "train")
    bad = _batch([1, 2], seed=4)
    bad[b"data"] = bad[b"data"][:, :3000]
    _write(base / "data_batch_4", bad)
    with pytest.raises(DataError, match=r"data_batch_4.*3072"):
        build_dataset("cifar10", tmp_path, "train")
    (base / "test_batch").write_bytes((base / "data_batch_1").read_bytes()[:100])
    with pytest.raises(DataError, match="test_batch"):
        build_dataset("cifar10", tmp_path, "test")
    with pytest.raises(DataError, match="split 'val'"):
        build_dataset("cifar10", tmp_path, "val")
    (base / "batches.meta").unlink()
    with pytest.raises(DataError, match="batches.meta"):
        build_dataset("cifar10", tmp_path, "test")


def make_cifar10c(root: Path, per: int = 4, full_labels: bool = True) -> None:
    data = np.zeros((5 * per, 32, 32, 3), dtype=np.uint8)
    for s in range(5):
        for i in range(per):
            data[s * per + i, 3, 4] = (s * 10 + i, 100 + s, 200 + i)
    np.save(root / "gaussian_noise.npy", data)
    np.save(root / "fog.npy", data[::-1].copy())
    labels = np.arange(per, dtype=np.int64) % 10
    np.save(root / "labels.npy", np.tile(labels, 5) if full_labels else labels)


def test_cifar10c_severity_block(tmp_path):
    make_cifar10c(tmp_path)
    ds = build_dataset("cifar10c", tmp_path, "test", corruption="gaussian_noise", severity=3)
    assert len(ds) == 4 and ds.labels == [0, 1, 2, 3] and ds.num_classes == 10
    s = ds[1]
    assert torch.equal((s.image[:, 3, 4] * 255).round(), torch.tensor([21.0, 102.0, 201.0]))
    assert s.image_id == 2 and s.name == "gaussian_noise.npy[9]"
    assert ds.class_names[0] == "airplane" and ds.native_size == 32


def test_cifar10c_short_labels_and_errors(tmp_path):
    make_cifar10c(tmp_path, full_labels=False)
    ds = build_dataset("cifar10c", tmp_path, "test", corruption="fog", severity=5)
    assert ds.labels == [0, 1, 2, 3]
    assert torch.equal((ds[0].image[:, 3, 4] * 255).round(), torch.tensor([3.0, 100.0, 203.0]))
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="severity"):
            build_dataset("cifar10c", tmp_path, "test", corruption="fog", severity=bad)
    with pytest.raises(DataError, match=r"fog, gaussian_noise"):
        build_dataset("cifar10c", tmp_path, "test", corruption="snow", severity=1)
    with pytest.raises(ConfigError, match=r"corruption=<name> \(on the command line -o corruption=fog -o severity=1\); available: fog, gaussian_noise$"):
        build_dataset("cifar10c", tmp_path, "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"available: none \(.* holds no <name>.npy beside labels.npy; see datasets/README.md\)"):
        build_dataset("cifar10c", tmp_path / "empty", "test")
    with pytest.raises(DataError, match="split 'train'"):
        build_dataset("cifar10c", tmp_path, "train", corruption="fog")
    np.save(tmp_path / "labels.npy", np.array([11, 0, 0, 0]))
    with pytest.raises(DataError, match="labels.npy"):
        build_dataset("cifar10c", tmp_path, "test", corruption="fog", severity=1)
    np.save(tmp_path / "labels.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="labels.npy"):
        build_dataset("cifar10c", tmp_path, "test", corruption="fog", severity=1)
    np.save(tmp_path / "labels.npy", np.arange(3))
    with pytest.raises(DataError, match="labels.npy"):
        build_dataset("cifar10c", tmp_path, "test", corruption="fog", severity=1)
