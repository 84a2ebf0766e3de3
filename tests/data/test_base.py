"""The shared loader pieces: the skip-corrupt rule and the one dataset base class."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsol.data.base import AnnotatedDataset, Record, check_files, check_flag, read_gray, read_image
from wsol.data.registry import build_dataset, load_all
from wsol.errors import ConfigError, DataError


def _png(path: Path, array: np.ndarray) -> Path:
    cv2.imwrite(str(path), array)
    return path


def test_check_files_raises_naming_the_file_and_place_unless_skipping(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", np.zeros((4, 5, 3), np.uint8))
    missing = tmp_path / "m.png"
    assert check_files([image], skip_corrupt=False) is None
    with pytest.raises(DataError, match=r"mask file .*m.png \(list.txt line 3\) not found; `wsol data verify` lists every unusable file"):
        check_files([image, missing], skip_corrupt=False, where="list.txt line 3")
    assert check_files([image, missing], skip_corrupt=True) == "mask m.png: missing"
    (tmp_path / "empty.png").write_bytes(b"")
    assert check_files([tmp_path / "empty.png"], skip_corrupt=True) == "empty file"


def test_record_without_boxes_gets_its_mask_box_and_shape_is_checked(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", np.zeros((6, 8, 3), np.uint8))
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:7] = 255
    good = _png(tmp_path / "good.png", mask)
    bad = _png(tmp_path / "bad.png", np.zeros((5, 8), np.uint8))
    ds = AnnotatedDataset([Record("a", 0, 1, image_path=image, mask_path=good)], ["x"])
    assert ds.has_masks
    sample = ds[0]
    assert sample.boxes.tolist() == [[3.0, 2.0, 7.0, 4.0]]
    assert sample.mask.sum() == 8
    ds = AnnotatedDataset([Record("a", 0, 1, image_path=image, mask_path=bad)], ["x"])
    with pytest.raises(DataError, match=r"bad.png is 8x5 but image .*a.png is 8x6"):
        ds[0]
    assert not AnnotatedDataset([Record("a", 0, 1, image_path=image)], ["x"]).has_masks


def test_read_image_and_read_gray_share_one_decode_rule(tmp_path: Path) -> None:
    """Both readers name the missing, empty or undecodable file, as an image or as a mask file."""
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200  # blue in cv2's BGR order: read_image returns RGB
    image = _png(tmp_path / "a.png", rgb)
    assert read_image(image)[0, 0].tolist() == [0, 0, 200]
    assert read_gray(image).shape == (3, 4) and read_gray(image)[0, 0] == 200
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for read, kind in ((read_image, "image"), (read_gray, "mask")):
        with pytest.raises(DataError, match=rf"^{kind} file not found: .*missing.png$"):
            read(tmp_path / "missing.png")
        for name in ("empty.png", "junk.png"):
            with pytest.raises(DataError, match=rf"^cannot decode {kind} file: .*{name}$"):
                read(tmp_path / name)


@pytest.mark.parametrize(
    "name, shown, splits",
    [
        ("cub", "CUB", "train, test"),
        ("wsolmeta", "wsolmeta", "train, val, test"),
        ("cifar10", "cifar10", "train, test"),
        ("cifar10c", "cifar10c", "test"),
        ("svhn", "svhn", "train, test, extra"),
        ("gtsrb", "gtsrb", "train, test"),
        ("flowers17", "flowers17", "train, val, test, trainval"),
        ("flowers102", "flowers102", "train, val, test, trainval"),
    ],
)
def test_an_unknown_split_is_refused_in_one_wording_before_any_file_is_read(tmp_path: Path, name: str, shown: str, splits: str) -> None:
    with pytest.raises(DataError, match=rf"^{shown} has splits {splits}; got split 'bogus'$"):
        build_dataset(name, tmp_path, split="bogus")


def test_check_flag_refuses_a_non_bool_naming_the_option(tmp_path: Path) -> None:
    assert check_flag("skip_corrupt", True) is True
    with pytest.raises(ConfigError, match=r"^option skip_corrupt must be true or false, got 'yes'$"):
        check_flag("skip_corrupt", "yes")
    for name in ("gtsrb", "flowers102"):  # called from Python, past the registry's option check
        with pytest.raises(ConfigError, match=r"^option skip_corrupt must be true or false, got 'yes'$"):
            load_all().get(name)(tmp_path, "train", skip_corrupt="yes")
