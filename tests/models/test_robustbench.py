"""Robust models by name: exact layouts (meta device for the big ones), strict local loading, clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsol.errors import CheckpointError, UnknownNameError
from wsol.models import build_model, save_model
from wsol.models.cifar_resnet import cifar_resnet18
from wsol.models.dm_wrn import dm_wide_resnet, ra_wide_resnet_70_16
from wsol.models.mixing import bai2023_edm
from wsol.models.robustbench import (
    load_robust_model,
    pyautoattack_resnet18_path,
    robust_model_names,
    strip_prefixes,
)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "factory, params, n_keys",
    [
        (lambda: dm_wide_resnet(28, 10), 36_479_194, 155),
        (lambda: dm_wide_resnet(70, 16), 266_796_506, 407),
        (ra_wide_resnet_70_16, 267_240_802, 1147),
        (cifar_resnet18, 11_173_962, 122),
    ],
)
def test_parameter_counts_and_state_dict_sizes(factory, params, n_keys) -> None:
    with torch.device("meta"):
        model = factory()
    assert _count(model) == params
    assert len(model.state_dict()) == n_keys


def test_dm_wrn_layout_and_nonpersistent_normalization() -> None:
    with torch.device("meta"):
        model = dm_wide_resnet(28, 10)
    state = model.state_dict()
    assert "mean" not in state and "std" not in state
    assert tuple(state["init_conv.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["layer.0.block.0.shortcut.weight"].shape) == (160, 16, 1, 1)
    assert "layer.0.block.1.shortcut.weight" not in state
    assert tuple(state["layer.2.block.3.conv_1.weight"].shape) == (640, 640, 3, 3)
    assert tuple(state["logits.weight"].shape) == (10, 640)
    assert isinstance(model.layer[0].block[0].relu_0, torch.nn.SiLU)
    assert model.layer[1].block[0].conv_0.padding == (0, 0)


def test_rawrn_squeeze_excitation_layout() -> None:
    with torch.device("meta"):
        model = ra_wide_resnet_70_16()
    state = model.state_dict()
    assert tuple(state["init_conv.weight"].shape) == (96, 3, 3, 3)
    assert tuple(state["layer.0.block.29.se.fc1.weight"].shape) == (54, 216, 1, 1)
    assert tuple(state["layer.1.block.30.se.fc2.weight"].shape) == (432, 108, 1, 1)
    assert tuple(state["layer.2.block.9.se.fc1.bias"].shape) == (216,)
    assert "layer.2.block.10.conv_0.weight" not in state
    assert model.layer[2].block[0].batchnorm_0.momentum == 0.01


def test_bai_mixture_parts() -> None:
    with torch.device("meta"):
        model = bai2023_edm()
    assert _count(model.rob_model) == 266_796_506
    std = model.std_model.state_dict()
    assert tuple(std["root.conv.weight"].shape) == (128, 3, 7, 7)
    assert "body.block3.unit36.conv3.weight" in std and "body.block3.unit37.conv3.weight" not in std
    assert tuple(std["head.conv.weight"].shape) == (10, 4096, 1, 1)
    mix = model.policy_net.state_dict()
    assert tuple(mix["conv1x1.weight"].shape) == (512, 1536, 1, 1)
    assert tuple(mix["layers.0.0.conv1.weight"].shape) == (512, 768, 3, 3)
    assert tuple(mix["linear.weight"].shape) == (1, 1024)
    assert set(model.bn.state_dict()) == {"running_mean", "running_var", "num_batches_tracked"}


def test_dm_wrn_maps_images_to_logits_and_is_translation_asymmetric() -> None:
    torch.manual_seed(0)
    model = dm_wide_resnet(10, 1).eval()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # TF-"SAME" padding is asymmetric: flipping the image does not simply flip what the network sees.
    assert not torch.allclose(model(x.flip(-1)), out)


def test_strip_prefixes() -> None:
    t = torch.zeros(1)
    assert set(strip_prefixes({"module.model.a": t, "b": t, "x.model.c": t})) == {"a", "b", "x.model.c"}


def test_names_and_unknown_name() -> None:
    names = robust_model_names()
    for name in ("Peng2023Robust", "Wang2023Better_WRN-70-16", "Wang2023Better_WRN-28-10",
                 "Cui2023Decoupled_WRN-28-10", "Bai2023Improving_edm", "pyautoattack-resnet18", "wsol-checkpoint"):
        assert name in names
    with pytest.raises(UnknownNameError, match="Peng2023Robust"):
        load_robust_model("Peng2024Robust", "x.pt")


def test_missing_file_is_one_line_error_naming_file_and_source(tmp_path: Path) -> None:
    missing = tmp_path / "Wang2023Better_WRN-28-10.pt"
    with pytest.raises(CheckpointError) as err:
        load_robust_model("Wang2023Better_WRN-28-10", missing)
    message = str(err.value)
    assert "\n" not in message and str(missing) in message
    assert "https://github.com/RobustBench/robustbench" in message and "1-6MYKJdECDVGaWjj6GgqvaT95BGKhUvI" in message
    with pytest.raises(CheckpointError, match="3 weight file"):
        load_robust_model("Bai2023Improving_edm", missing)
    with pytest.raises(CheckpointError, match="needs its weight file"):
        load_robust_model("Peng2023Robust")


def test_a_folder_given_as_weights_is_named_a_folder_with_the_file_to_pass(tmp_path: Path) -> None:
    """--weights DIR (or weights: DIR in a study file) said "not found" of a folder that is there."""
    with pytest.raises(CheckpointError, match=rf"{tmp_path} is a folder; pass the file in it, e.g. {tmp_path}/Wang2023Better_WRN-28-10.pt$"):
        load_robust_model("Wang2023Better_WRN-28-10", tmp_path)


def test_a_wsol_checkpoint_given_as_weights_says_to_pass_it_as_checkpoint(tmp_path: Path) -> None:
    """--model pyautoattack-resnet18 --weights runs/x/model.safetensors listed 100+ missing and unexpected keys."""
    from wsol.models import build_model, save_model

    ck = save_model(build_model("small-cnn", 10, input_size=32), tmp_path / "model", dataset="cifar10")
    with pytest.raises(CheckpointError, match=rf"{ck} is a wsol checkpoint, not pyautoattack-resnet18's weights; pass it as --checkpoint {ck}"):
        load_robust_model("pyautoattack-resnet18", ck)


def test_small_checkpoint_loads_strictly_with_prefixes(tmp_path: Path) -> None:
    source = cifar_resnet18()
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = load_robust_model("pyautoattack-resnet18", path)
    assert not model.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), source.eval()(x))
    state = source.state_dict()
    state.pop("linear.bias")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing: linear.bias"):
        load_robust_model("pyautoattack-resnet18", path)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"net": cifar_resnet18()}, path)
    with pytest.raises(CheckpointError, match=r"needs code to unpickle \(\S*ResNet\S*: a whole model saved with torch.save\(model\)\?\); save model.state_dict\(\)"):
        load_robust_model("pyautoattack-resnet18", path)


def test_truncated_and_empty_weight_files_are_one_line_errors(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(cifar_resnet18().state_dict(), whole)
    for name, data in (("cut.pt", whole.read_bytes()[:5000]), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=f"cannot read checkpoint .*{name}") as err:
            load_robust_model("pyautoattack-resnet18", tmp_path / name)
        assert "\n" not in str(err.value)
    json_file = tmp_path / "model.json"
    json_file.write_text('{"format": "wsol-checkpoint-v1"}')
    with pytest.raises(CheckpointError, match="not a PyTorch weights file"):
        load_robust_model("pyautoattack-resnet18", json_file)


def test_a_checkpoint_sidecar_given_as_the_checkpoint_names_the_weights_beside_it(tmp_path: Path) -> None:
    from wsol.models import build_model, save_model

    saved = save_model(build_model("small-cnn", 2, input_size=32), tmp_path / "model")
    with pytest.raises(CheckpointError, match=f"is a JSON file, not model weights; pass the weights file beside it, {saved}"):
        load_robust_model("wsol-checkpoint", saved.with_suffix(".json"))


def test_wsol_checkpoint_by_name(tmp_path: Path) -> None:
    model = build_model("small-cnn", 3).eval()
    path = save_model(model, tmp_path / "ck.safetensors")
    loaded = load_robust_model("wsol-checkpoint", path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x))


def test_shipped_pyautoattack_resnet18_loads_strictly_and_classifies() -> None:
    path = pyautoattack_resnet18_path()
    assert path.is_file(), f"pyautoattack's examples/model_test.pt not found at {path}; run `pip install pyautoattack`"
    model = load_robust_model("pyautoattack-resnet18")
    assert _count(model) == 11_173_962
    assert int(model.state_dict()["bn1.num_batches_tracked"]) == 39_100
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()
    # Trained weights give input-dependent predictions: not every input gets the same logits.
    assert logits.std(dim=0).min() > 0


def test_mixture_loads_from_three_files_in_robustbench_layout(tmp_path: Path) -> None:
    from wsol.models.bit_resnet import BiTResNetV2
    from wsol.models.mixing import BAI2023_EDM_CIFAR10, MixedClassifier, MixingNet
    from wsol.models.robustbench import _load_mixture

    def small() -> MixedClassifier:
        return MixedClassifier(
            BiTResNetV2((1, 1, 1, 1), 1, 10), dm_wide_resnet(10, 1),
            MixingNet(first=(256, 16), second=(512, 32), widths=(32, 32, 32)), BAI2023_EDM_CIFAR10,
        )

    torch.manual_seed(0)
    source = small()
    with torch.no_grad():
        source.bn.running_mean.fill_(0.3)
        source.bn.running_var.fill_(2.0)
    paths = [tmp_path / f"Bai2023Improving_edm.pt_m{i}.pt" for i in range(3)]
    torch.save({f"module.{k}": v for k, v in source.std_model.state_dict().items()}, paths[0])
    torch.save(source.rob_model.state_dict(), paths[1])
    torch.save({"model": source.policy_net.state_dict(), "bn": source.bn.state_dict()}, paths[2])
    target = small()
    _load_mixture(target, paths)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = target.eval()(x)
        assert torch.equal(out, source.eval()(x))
    # Log-probabilities of a mixture of two distributions: each row sums to one after exp.
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(2), atol=1e-5)
    torch.save(source.policy_net.state_dict(), paths[2])
    with pytest.raises(CheckpointError, match="mixing-network file"):
        _load_mixture(small(), paths)


def test_every_relu_is_a_module_that_attacks_can_switch_to_softplus() -> None:
    """A functional ``F.relu`` would stay a ReLU inside ART's and IFIA's gradient surrogate (its second
    derivative is zero), so the robust models keep their ReLUs as modules; SiLU parts need no switch."""
    from wsol.models.activations import softplus
    from wsol.models.bit_resnet import BiTResNetV2
    from wsol.models.dm_wrn import DMStyleWideResNet
    from wsol.models.mixing import MixingNet

    torch.manual_seed(0)
    models = {
        "resnet18": (cifar_resnet18().eval(), torch.rand(2, 3, 32, 32)),
        "se-wrn": (DMStyleWideResNet(16, (1, 1, 1), (16, 32, 64), se_ratio=0.25).eval(), torch.rand(2, 3, 32, 32)),
        "bit": (BiTResNetV2((1, 1, 1, 1), 1, 10).eval(), torch.rand(2, 3, 32, 32)),
        "mixing": (MixingNet(first=(256, 16), second=(512, 32), widths=(32, 32, 32)).eval(), None),
    }
    for name, (model, x) in models.items():
        relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
        assert relus, f"{name} has no nn.ReLU modules"
        if x is None:
            continue
        with torch.no_grad():
            plain = model(x)
            with softplus(model, beta=2.0):
                smooth = model(x)
            again = model(x)
        assert not torch.allclose(plain, smooth), f"softplus did not reach {name}'s activations"
        assert torch.equal(plain, again)


def test_models_listing_shows_commands_that_exist(capsys) -> None:
    from wsol.cli import run

    assert run(["models"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("evaluation models"))
    commands = header.split("(wsol robustness ")[1].split(" --model")[0].split("|")
    assert commands == ["evaluate", "per-class"]
    for command in commands:
        assert run(["robustness", command, "--help"]) == 0
    checkpoint_line = next(line for line in out.splitlines() if line.strip().startswith("wsol-checkpoint"))
    assert "--checkpoint FILE" in checkpoint_line


def test_bai_says_its_robust_file_is_wang_wrn_70_16s_download() -> None:
    """RobustBench's Bai2023Improving_edm robust part has the Drive id of Wang2023Better_WRN-70-16: one download serves both."""
    from wsol.models.robustbench import ROBUST_MODELS, describe_robust_model

    bai, wang = ROBUST_MODELS.get("Bai2023Improving_edm")(), ROBUST_MODELS.get("Wang2023Better_WRN-70-16")()
    wang_id = wang.source.split("Google Drive id ")[1].split(";")[0]
    assert bai.source.split("Google Drive id ")[1].split(";")[0].split(", ")[1] == wang_id
    assert "the robust one is the same Drive file as Wang2023Better_WRN-70-16.pt" in describe_robust_model("Bai2023Improving_edm")
