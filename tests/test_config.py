"""Config loading: YAML + overrides, fractions for epsilons, errors that name the key."""
from __future__ import annotations

import pytest

from dataclasses import dataclass
from typing import Tuple

from wsol.config import (
    AttackConfig,
    ConfigError,
    attack_config,
    build_config,
    config_to_yaml,
    load_config,
    parse_number,
    parse_override,
    start_eps,
)
from wsol.data.registry import load_all
from wsol.models.build import MODELS
from wsol.train.methods import METHODS


def test_fraction_and_decimal_epsilons() -> None:
    assert parse_number("8/255") == pytest.approx(8 / 255)
    assert parse_number("0.0314") == pytest.approx(0.0314)
    assert parse_number(2) == 2.0


def test_yaml_file_and_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("arch: wrn-16-2\nmethod: art\nart:\n  eps: 2/255\n  lam: 0.5\nschedule:\n  milestones: [50, 80]\n")
    config = load_config(path, {"art.lam": 0.25, "epochs": 7})
    assert config.art.eps == pytest.approx(2 / 255)
    assert config.art.lam == 0.25
    assert config.epochs == 7
    assert config.schedule.milestones == (50, 80)
    assert load_config(None, dict([parse_override(text) for text in ["art.eps=8/255"]])).art.eps == pytest.approx(8 / 255)


def test_resolved_yaml_round_trips(tmp_path) -> None:
    config = load_config(None, {"method": "pgd", "pgd.steps": 7})
    path = tmp_path / "resolved.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"art.lamda": 1}, "unknown config key art.lamda"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"method": "fgsm"}, "method must be one of"),
        ({"art.eps": "eight"}, "art.eps: expected a number"),
        ({"pgd.eps": 8}, "pgd.eps is in pixel units"),
        ({"optim.nesterov": "maybe"}, "optim.nesterov: expected true or false"),
        ({"batch_size": 1.5}, "batch_size: expected an integer"),
        ({"eval.pgd.eps": 3}, "eval.pgd.eps is in pixel units"),
        ({"eval.pgd.step_size": -1}, "eval.pgd.step_size must not be negative"),
        ({"art.norm": "l1"}, "art.norm must be one of linf, l2"),
        ({"pgd.norm": "l2"}, "pgd.norm: training attacks run in linf only"),
        ({"art.steps": 0}, "art.steps must be positive"),
        ({"arch": "resnet-9000"}, "arch must be one of"),
        ({"dataset": "mnist"}, "dataset must be one of"),
        ({"eval.pgd_steps": 1}, "unknown config key eval.pgd_steps"),
        ({"image_size": 0}, "image_size must be positive"),
        ({"max_train_batches": 0}, "max_train_batches must be positive"),
        ({"eval.max_batches": 0}, "eval.max_batches must be positive"),
        ({"art.topk": 0}, "art.topk must be positive"),
        ({"schedule.step_size": -1}, "schedule.step_size must not be negative"),
        ({"optim.momentum": 2}, "optim.momentum must be below 1"),
    ],
)
def test_bad_values_name_the_key(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("art.lam")


def test_one_attack_block_for_pgd_art_and_evaluation() -> None:
    config = load_config(None, {"method": "art", "art.eps": "2/255", "art.random_start": False, "eval.pgd.steps": 5})
    assert all(isinstance(block, AttackConfig) for block in (config.pgd, config.art, config.eval.pgd))
    assert config.art.step_size == pytest.approx(1.5 / 255) and config.art.steps == 3
    assert config.eval.pgd.steps == 5 and config.eval.pgd.norm == "linf"
    assert attack_config(config) is config.art
    assert start_eps(config) == 0.0
    assert start_eps(load_config(None, {"method": "art-pgd", "art.eps": "2/255"})) == pytest.approx(2 / 255)
    assert start_eps(load_config(None, {"method": "pgd", "pgd.eps": "4/255"})) == pytest.approx(4 / 255)
    assert start_eps(load_config(None, {"method": "natural"})) == 0.0


def test_the_method_registry_has_one_step_per_config_method() -> None:
    from wsol.config import METHOD_ATTACKS

    assert sorted(METHODS.names()) == sorted(METHOD_ATTACKS)


def test_allowed_names_come_from_the_registries() -> None:
    for key, registry in (("method", METHODS), ("arch", MODELS), ("dataset", load_all())):
        for name in registry.names():
            assert getattr(load_config(None, {key: name}), key) == name
    try:
        MODELS.register("test-only-arch")(lambda: None)
        assert load_config(None, {"arch": "test-only-arch"}).arch == "test-only-arch"
    finally:
        MODELS._entries.pop("test-only-arch")


@dataclass(frozen=True)
class _SweepConfig:
    eps_sweep: Tuple[float, ...] = ()
    attack: AttackConfig = AttackConfig()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"eps_sweep": ["1/255", 2]}, r"eps_sweep\[1\] is in pixel units"),
        ({"eps_sweep": [0.1, -0.01]}, r"eps_sweep\[1\] must not be negative"),
        ({"eps_sweep": 0.1}, "eps_sweep: expected a list"),
        ({"attack": {"steps": -2}}, "attack.steps must not be negative"),
    ],
)
def test_epsilon_lists_are_range_checked(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(_SweepConfig, data)


def test_epsilon_list_parses_fractions() -> None:
    assert build_config(_SweepConfig, {"eps_sweep": ["1/255", 0.5]}).eps_sweep == (pytest.approx(1 / 255), 0.5)


def test_wrn28_art_configs_at_32px_train_in_fp32_nchw() -> None:
    """ART's double backward ran fastest in fp32 NCHW on WRN-28-10 at 32×32 (docs/benchmarks.md, session 9);
    the natural and PGD configs keep bf16 autocast and channels-last, which sped those up."""
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("cifar10_wrn28-10_art", "cifar10_wrn28-10_art-pgd", "cifar10_wrn28-10_art-official", "gtsrb_wrn28-10_art"):
        config = load_config(configs / f"{name}.yaml")
        assert (config.amp, config.channels_last) == (False, False), name
    for name in ("cifar10_wrn28-10_natural", "cifar10_wrn28-10_pgd"):
        config = load_config(configs / f"{name}.yaml")
        assert config.amp and config.channels_last, name


def test_a_division_by_zero_says_what_to_write() -> None:
    """--eps 8/0 said only "division by zero in '8/0'", not what is accepted."""
    from wsol.utils.numbers import parse_number

    with pytest.raises(ConfigError, match=r"--eps: division by zero in '8/0'; write a number such as 0.03 or 8/255$"):
        parse_number("8/0", "--eps")
