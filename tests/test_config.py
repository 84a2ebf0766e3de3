"""Config loading: YAML + overrides, fractions for epsilons, errors that name the key."""
from __future__ import annotations

import pytest

from wsol.config import ConfigError, config_to_yaml, load_config, parse_number, parse_override


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
