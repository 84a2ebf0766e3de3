"""The training loop: run folder contents, bit-exact resume, NaN stop, schedules, config lookup."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from wsol.config import ScheduleConfig, default_config_path, load_config
from wsol.errors import ConfigError, WsolError
from wsol.jobs.train import NonFiniteLossError, lr_factor, train
from wsol.models import load_model
from wsol.models.checkpoint import load_state_file
from wsol.utils.io import read_jsonl

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config(method: str, epochs: int, **extra):
    base = {
        "method": method,
        "arch": "wrn-16-2",
        "epochs": epochs,
        "batch_size": 8,
        "eval_batch_size": 12,
        "optim.lr": 0.05,
        "optim.nesterov": True,
        "schedule.kind": "multistep",
        "schedule.milestones": [1],
        "schedule.gammas": [0.5],
        "pgd.steps": 2,
        "art.steps": 1,
        "eval.pgd.steps": 1,
    }
    base.update(extra)
    return load_config(None, base)


def _weights(folder: Path):
    return load_state_file(folder / "model.safetensors")


def test_run_folder_contents(tmp_path, toy_sets) -> None:
    train_set, test_set = toy_sets()
    out = tmp_path / "run"
    result = train(_config("art", 1), out, train_set=train_set, test_set=test_set)
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "model.json", "train_state.pt"):
        assert (out / name).is_file(), name
    assert load_config(out / "config.yaml").method == "art"
    (record,) = read_jsonl(out / "metrics.jsonl")
    for key in ("epoch", "train/loss", "train/ce", "train/attr", "train/acc", "images_per_s", "lr", "test/acc", "test/pgd1_acc"):
        assert key in record, key
    assert record["train/loss"] == pytest.approx(record["train/ce"] + 0.5 * record["train/attr"], rel=1e-5)
    assert result["test/acc"] == record["test/acc"] and 0 <= record["test/acc"] <= 1
    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset"] == "shapes" and meta["method"] == "art" and meta["epoch"] == 1
    assert meta["class_names"] == train_set.class_names and meta["config"]["arch"] == "wrn-16-2"
    model = load_model(out / "model.safetensors")
    assert model.num_classes == 3
    with pytest.raises(WsolError, match="--resume"):
        train(_config("art", 1), out, train_set=train_set, test_set=test_set)


def test_resume_equals_uninterrupted(tmp_path, toy_sets) -> None:
    train_set, test_set = toy_sets()
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_config("pgd", 2), straight, train_set=train_set, test_set=test_set)
    train(_config("pgd", 1), split, train_set=train_set, test_set=test_set)
    with pytest.raises(ConfigError, match=r"optim\.lr was 0\.05, now 0\.01\)$"):  # what each was and is, not only the key
        train(_config("pgd", 2, **{"optim.lr": 0.01}), split, resume=True, train_set=train_set, test_set=test_set)
    train(_config("pgd", 2), split, resume=True, train_set=train_set, test_set=test_set)
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # weights and batch-norm buffers, bit for bit
    ra, rb = read_jsonl(straight / "metrics.jsonl"), read_jsonl(split / "metrics.jsonl")
    assert [r["epoch"] for r in rb] == [1, 2]
    assert [r["train/loss"] for r in ra] == [r["train/loss"] for r in rb]
    assert rb[1]["lr"] == pytest.approx(0.025)


class _Poisoned(Dataset):
    """Wraps a dataset; from the ``after``-th item on, images are NaN."""

    def __init__(self, base, after: int) -> None:
        self.base, self.after, self.calls = base, after, 0
        for key in ("class_names", "num_classes", "labels", "mean", "std", "native_size", "has_masks"):
            setattr(self, key, getattr(base, key))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        sample = self.base[index]
        self.calls += 1
        if self.calls > self.after:
            sample.image = torch.full_like(sample.image, float("nan"))
        return sample


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, toy_sets) -> None:
    train_set, test_set = toy_sets()
    out = tmp_path / "run"
    poisoned = _Poisoned(train_set, after=len(train_set))  # epoch 1 clean, epoch 2 NaN
    with pytest.raises(NonFiniteLossError, match=r"nan at epoch 2, step 1.*last good epoch \(1\)"):
        train(_config("natural", 3), out, train_set=poisoned, test_set=test_set)
    meta = json.loads((out / "model.json").read_text())
    assert meta["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in _weights(out).values() if v.is_floating_point())
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1]


def test_warmup_epochs_are_the_natural_run(tmp_path, toy_sets) -> None:
    train_set, test_set = toy_sets()
    natural, art = tmp_path / "natural", tmp_path / "art"
    train(_config("natural", 1), natural, train_set=train_set, test_set=test_set)
    train(_config("art", 2, warmup_epochs=1), art, train_set=train_set, test_set=test_set)
    nat_record, (warm, fine) = read_jsonl(natural / "metrics.jsonl")[0], read_jsonl(art / "metrics.jsonl")
    assert (warm["method"], fine["method"]) == ("natural", "art")
    assert "train/attr" not in warm and "train/attr" in fine
    for key in ("train/loss", "train/acc", "lr"):
        assert warm[key] == nat_record[key], key  # the warm-up epoch is the natural epoch, bit for bit
    assert fine["lr"] == pytest.approx(0.05 * 0.5)


def test_warm_start_skips_the_warmup_exactly(tmp_path, toy_sets) -> None:
    # Without momentum SGD keeps no state, so starting the ART phase from the natural model (fast-forwarded
    # schedule, same seeds for data order and attack starts) must give the one-run result bit for bit.
    train_set, test_set = toy_sets()
    plain = {"optim.momentum": 0.0, "optim.nesterov": False}
    train(_config("natural", 1, **plain), tmp_path / "natural", train_set=train_set, test_set=test_set)
    train(_config("art", 2, warmup_epochs=1, **plain), tmp_path / "one", train_set=train_set, test_set=test_set)
    warm = _config("art", 2, warmup_epochs=1, warm_start=str(tmp_path / "natural" / "model.safetensors"), **plain)
    train(warm, tmp_path / "two", train_set=train_set, test_set=test_set)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    (record,) = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert (record["epoch"], record["method"]) == (2, "art") and record["lr"] == pytest.approx(0.025)
    missing = _config("art", 2, warmup_epochs=1, warm_start=str(tmp_path / "none.safetensors"))
    with pytest.raises(ConfigError, match=r"none.safetensors not found \(the config's `warm_start`\).*--warm-start"):
        train(missing, tmp_path / "three", train_set=train_set, test_set=test_set)


def test_resume_across_the_end_of_the_warmup(tmp_path, toy_sets) -> None:
    train_set, test_set = toy_sets()
    config = _config("art", 3, warmup_epochs=1)
    train(config, tmp_path / "straight", train_set=train_set, test_set=test_set)
    killed = tmp_path / "killed"  # stops in epoch 2, the first ART epoch, with the warm-up epoch saved
    with pytest.raises(NonFiniteLossError, match="art training loss became nan at epoch 2"):
        train(config, killed, train_set=_Poisoned(train_set, after=len(train_set)), test_set=test_set)
    train(config, killed, resume=True, train_set=train_set, test_set=test_set)
    a, b = _weights(tmp_path / "straight"), _weights(killed)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["method"] for r in read_jsonl(killed / "metrics.jsonl")] == ["natural", "art", "art"]


def test_warmup_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs \\(2\\) must be below epochs \\(2\\)"):
        _config("art", 2, warmup_epochs=2)
    with pytest.raises(ConfigError, match="warmup_epochs is 0"):
        _config("art", 2, warm_start="natural.safetensors")
    with pytest.raises(ConfigError, match="not both"):
        _config("art", 2, warmup_epochs=1, warm_start="a.safetensors", weights="b.safetensors")
    with pytest.raises(ConfigError, match="must not be negative"):
        _config("art", 2, warmup_epochs=-1)


def test_lr_schedules() -> None:
    multi = ScheduleConfig(kind="multistep", milestones=(50, 80, 150), gammas=(0.1, 0.1, 0.5))
    assert [lr_factor(multi, e) for e in (0, 49, 50, 80, 150)] == pytest.approx([1, 1, 0.1, 0.01, 0.005])
    step = ScheduleConfig(kind="step", step_size=40, gamma=0.1)
    assert [lr_factor(step, e) for e in (0, 39, 40, 199)] == pytest.approx([1, 1, 0.1, 1e-4])
    same_gamma = ScheduleConfig(kind="multistep", milestones=(2, 4), gamma=0.5)
    assert lr_factor(same_gamma, 4) == pytest.approx(0.25)
    assert lr_factor(ScheduleConfig(kind="constant"), 99) == 1.0


def test_every_shipped_config_loads() -> None:
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 24
    for path in files:
        config = load_config(path)
        dataset, arch, method = path.stem.split("_", 2)
        assert config.dataset == dataset, path.name
        assert config.arch.replace("wrn-", "wrn") == arch, path.name
        assert config.method == method.replace("-official", ""), path.name


def test_paper_settings() -> None:
    art = load_config(CONFIGS / "cifar10_wrn28-10_art.yaml")
    assert (art.art.lam, art.art.steps, art.art.beta, art.batch_size, art.epochs) == (0.5, 3, 50.0, 256, 100)
    assert art.art.eps == pytest.approx(8 / 255) and art.art.step_size == pytest.approx(1.5 / 255)
    official = load_config(CONFIGS / "cifar10_wrn28-10_art-official.yaml")
    assert official.art.topk == 1000 and official.art.normalized_cosine and official.art.clean_and_adv
    assert official.art.step_size == pytest.approx(5 / 255) and official.optim.nesterov
    cub = load_config(CONFIGS / "cub_resnet50_art.yaml")
    assert cub.art.channel_mean and cub.art.eps == pytest.approx(2 / 255) and cub.batch_size == 90
    assert (cub.schedule.kind, cub.schedule.step_size) == ("step", 40)
    assert load_config(CONFIGS / "svhn_wrn40-2_pgd.yaml").pgd.steps == 7


def test_default_config_lookup() -> None:
    assert default_config_path("cifar10", "art") == CONFIGS / "cifar10_wrn28-10_art.yaml"
    assert default_config_path("cub", "art", "vgg16-gap") == CONFIGS / "cub_vgg16-gap_art.yaml"
    assert default_config_path("cifar10", "art", "wrn-28-10") == CONFIGS / "cifar10_wrn28-10_art.yaml"
    assert default_config_path("nosuchset", "art") is None
    assert default_config_path("cub", "art") == CONFIGS / "cub_resnet50_art.yaml"  # the dataset's default arch


def test_default_config_lookup_ambiguous_without_default_arch(tmp_path: Path) -> None:
    for name in ("toy_small-cnn_art.yaml", "toy_resnet18_art.yaml"):
        (tmp_path / name).write_text("method: art\n")
    with pytest.raises(ConfigError, match="--arch"):
        default_config_path("toy", "art", folder=tmp_path)
    assert default_config_path("toy", "art", "resnet18", folder=tmp_path) == tmp_path / "toy_resnet18_art.yaml"
