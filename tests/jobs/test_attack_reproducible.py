"""Attack rows are per sample: the same whatever the batch size, the resume point or the batch a sample lands in."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from wsol.attacks.core import sample_generators, uniform_noise
from wsol.cli import run
from wsol.jobs.attack import AttributionAttackSettings, run_attribution_attack

FLOATS = ("topk_intersection", "kendall", "spearman", "center_shift", "cos_x_grad",
          "target_ssim", "target_pearson", "target_mse", "target_topk", "original_ssim", "original_pearson", "original_mse", "original_topk")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shapes_run) -> dict:
    return shapes_run(tmp_path_factory.mktemp("repro"), n_test=12, num_classes=2, seed=3, torch_seed=1, n_train=4)


# random start and random sign steps: every draw of the attack is random
IFIA = ["--attribution", "ig", "--ig-steps", "3", "--preset", "official", "--objective", "random", "--k", "20", "--steps", "3",
        "--eps", "16/255", "--step-size", "4/255", "--n", "8", "--pgd-steps", "2", "--seed", "5"]


def _ifia(tiny: dict, out: Path, batch_size: int, *extra: str) -> int:
    return run(["attack", "attribution", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]),
                "--out", str(out), *IFIA, "--batch-size", str(batch_size), *extra])


def _rows(folder: Path) -> list:
    with open(folder / "samples.csv") as f:
        return list(csv.DictReader(f))


def _same_rows(a: list, b: list) -> None:
    assert [r["index"] for r in a] == [r["index"] for r in b]
    for ra, rb in zip(a, b):
        for key in ra:
            if key in FLOATS and "" not in (ra[key], rb[key]):  # "": a metric the sample does not have
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-4, abs=1e-5), (ra["index"], key)
            else:
                assert ra[key] == rb[key], (ra["index"], key)


def test_per_sample_generators_do_not_depend_on_the_batch() -> None:
    together = uniform_noise((3, 2, 4), sample_generators(7, [10, 11, 12]))
    alone = uniform_noise((1, 2, 4), sample_generators(7, [11]))
    assert torch.equal(together[1:2], alone)
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(alone, uniform_noise((1, 2, 4), sample_generators(7, [11], stream="other")))
    assert not torch.equal(alone, uniform_noise((1, 2, 4), sample_generators(8, [11])))


def test_official_random_ifia_rows_do_not_depend_on_the_batch_size(tiny) -> None:
    assert _ifia(tiny, tiny["base"] / "b8", 8) == 0
    assert _ifia(tiny, tiny["base"] / "b3", 3) == 0
    rows = _rows(tiny["base"] / "b8")
    assert any(r["kept_prediction"] == "True" for r in rows)
    assert len({r["kendall"] for r in rows if r["kept_prediction"] == "True"}) > 1
    _same_rows(_rows(tiny["base"] / "b3"), rows)


def test_interrupted_run_resumed_with_another_batch_size_gives_the_same_rows(tiny) -> None:
    reference = tiny["base"] / "b8"
    if not (reference / "summary.json").is_file():
        assert _ifia(tiny, reference, 8) == 0
    out = tiny["base"] / "resumed"

    class Stop(Exception):
        pass

    def stop(batch: int) -> None:
        raise Stop

    settings = AttributionAttackSettings(attribution="ig", ig_steps=3, preset="official", objective="random", k=20, steps=3, eps="16/255",
                                         step_size="4/255", n=8, pgd_steps=2, seed=5, batch_size=3)
    with pytest.raises(Stop):
        run_attribution_attack(tiny["checkpoint"], "shapes", tiny["root"], out, settings, after_batch=stop)
    text = (out / "samples.csv").read_text()
    (out / "samples.csv").write_text(text[:-7])  # the third row is torn: the resumed batches hold other samples
    assert _ifia(tiny, out, 2) == 0
    _same_rows(_rows(out), _rows(reference))


def test_targeted_rows_do_not_depend_on_the_batch_size(tiny) -> None:
    def targeted(out: Path, batch_size: int) -> list:
        argv = ["attack", "targeted", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]),
                "--out", str(out), "--attribution", "grad", "--k", "20", "--steps", "2", "--n", "6", "--batch-size", str(batch_size)]
        assert run(argv) == 0
        return _rows(out)

    whole, split = targeted(tiny["base"] / "t6", 6), targeted(tiny["base"] / "t4", 4)
    assert {int(r["target_index"]) for r in whole} == {int(r["index"]) for r in whole}
    assert all(r["target_index"] != r["index"] for r in whole)
    _same_rows(split, whole)
