"""Equal logits against RobustBench's own architecture modules (robustbench==1.1.1, installed with --no-deps).

The oracle's package ``__init__`` imports modules this environment does not have, so its architecture
files are imported directly under empty parent packages. Weights are random; BN statistics are randomized
so that every layer matters. The runtime (``wsol``) never imports robustbench.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from wsol.models.bit_resnet import BiTResNetV2
from wsol.models.cifar_resnet import cifar_resnet18
from wsol.models.dm_wrn import DMStyleWideResNet, dm_wide_resnet
from wsol.models.mixing import BAI2023_EDM_CIFAR10, MixedClassifier, MixingNet
from wsol.models.robustbench import pyautoattack_resnet18_path


@functools.lru_cache(maxsize=None)
def _package_dir(name: str) -> Path:
    """Where ``name`` is installed, found before any stub replaces it in ``sys.modules``."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the test oracle needs {name}: run `pip install --no-deps robustbench==1.1.1` (and `pip install pyautoattack`)")
    return Path(list(spec.submodule_search_locations)[0])


def oracle(module: str) -> types.ModuleType:
    """``robustbench.model_zoo.architectures.<module>``, imported without running the package ``__init__``s."""
    root = _package_dir("robustbench")
    for package, path in (
        ("robustbench", root),
        ("robustbench.model_zoo", root / "model_zoo"),
        ("robustbench.model_zoo.architectures", root / "model_zoo" / "architectures"),
    ):
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = [str(path)]
            sys.modules[package] = stub
    return importlib.import_module(f"robustbench.model_zoo.architectures.{module}")


@contextmanager
def _cuda_is_identity():
    """The oracle's BiT model moves its constants with ``.cuda()`` in ``__init__``; keep them on the CPU."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _randomize_norms(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def _same_logits(theirs: nn.Module, ours: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    _randomize_norms(theirs, seed)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    if isinstance(expected, tuple):
        expected = expected[0]
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5), (got - expected).abs().max()


def test_dm_wide_resnet_matches_oracle() -> None:
    torch.manual_seed(0)
    theirs = oracle("dm_wide_resnet").DMWideResNet(num_classes=10, depth=10, width=2, activation_fn=nn.SiLU)
    _same_logits(theirs, dm_wide_resnet(10, 2), torch.rand(3, 3, 32, 32))


def test_dm_wide_resnet_relu_matches_oracle() -> None:
    torch.manual_seed(1)
    theirs = oracle("dm_wide_resnet").DMWideResNet(num_classes=10, depth=16, width=1, activation_fn=nn.ReLU)
    _same_logits(theirs, dm_wide_resnet(16, 1, activation=nn.ReLU), torch.rand(2, 3, 32, 32))


def test_rawrn_matches_oracle_on_small_config() -> None:
    torch.manual_seed(2)
    arch = oracle("robustarch_wide_resnet")
    theirs = arch.NormalizedWideResNet(
        (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), stem_width=8, depth=[2, 2, 1], stage_width=[16, 24, 32],
        groups=[1, 1, 1], activation_fn=nn.SiLU, se_ratio=0.25, se_activation=nn.ReLU, se_order=2, num_classes=10,
    )
    ours = DMStyleWideResNet(8, (2, 2, 1), (16, 24, 32), 10, nn.SiLU, se_ratio=0.25, bn_momentum=0.01)
    _same_logits(theirs, ours, torch.rand(2, 3, 32, 32))


def test_rawrn_full_config_has_oracle_keys_and_shapes() -> None:
    from wsol.models.dm_wrn import ra_wide_resnet_70_16

    with torch.device("meta"):
        theirs = oracle("robustarch_wide_resnet").get_model("ra_wrn70_16").state_dict()
        ours = ra_wide_resnet_70_16().state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_bit_resnet_matches_oracle_on_small_config() -> None:
    torch.manual_seed(3)
    with _cuda_is_identity():
        theirs = oracle("bit_rn").ResNetV2([1, 2, 1, 1], 1, head_size=10)
    _same_logits(theirs, BiTResNetV2((1, 2, 1, 1), 1, 10), torch.rand(2, 3, 64, 64))


def test_mixing_net_matches_oracle() -> None:
    torch.manual_seed(4)
    theirs = oracle("mixing_net").MixingNetV4({"in_planes": (64, 64)})
    ours = MixingNet(first=(64, 64), second=(128, 128), widths=(256, 512, 1024))
    _randomize_norms(theirs, 4)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats1 = [torch.randn(2, 64, 8, 8), torch.randn(2, 64, 8, 8)]
    feats2 = [torch.randn(2, 128, 4, 4), torch.randn(2, 128, 4, 4)]
    with torch.no_grad():
        assert torch.allclose(ours.eval()(feats1, feats2), theirs.eval()(feats1, feats2), rtol=1e-4, atol=1e-5)


def test_bai_mixture_matches_oracle_composite_on_small_parts() -> None:
    """The oracle's CompositeModel (built on the meta device) with small base models and mixing network swapped in."""
    torch.manual_seed(5)
    comp_mod = oracle("comp_model")
    bit, dm_rn, mixing = oracle("bit_rn"), oracle("dm_rn"), oracle("mixing_net")
    settings = {"std_model_type": "rn152", "rob_model_type": "wrn7016_silu", "in_planes": (256, 64), "gamma": 2.5,
                "use_policy": True, "policy_graph": True, "pn_version": 4, "parallel": False, "num_classes": 10}
    with _cuda_is_identity(), torch.device("meta"):
        comp = comp_mod.CompositeModel(settings)
    with _cuda_is_identity():
        std = bit.ResNetV2([1, 1, 1, 1], 1, head_size=10)
    rob = dm_rn.WideResNet(num_classes=10, depth=10, width=4, activation_fn=nn.SiLU)
    comp.models = nn.ModuleList([std.eval(), rob.eval()])
    comp.policy_net = mixing.MixingNetV4(settings)
    comp.bn = nn.BatchNorm1d(1, affine=False, momentum=0.01)
    for attr in ("gamma_scale", "gamma_bias", "alpha_scale", "alpha_bias", "std_scale", "rob_scale"):
        setattr(comp, attr, nn.Parameter(torch.tensor(1.0), requires_grad=False))
    comp.set_gamma_value(3.0)
    comp.set_gamma_scale_bias(gamma_scale=2.0, gamma_bias=1.05)
    comp.set_alpha_scale_bias(alpha_scale=0.04, alpha_bias=0.96)
    comp.set_base_model_scale(std_scale=1.2, rob_scale=0.3)
    theirs = comp_mod.CompositeModelWrapper(comp, parallel=False)
    for part in (std, rob, comp.policy_net, comp.bn):
        _randomize_norms(part, 5)

    ours = MixedClassifier(
        BiTResNetV2((1, 1, 1, 1), 1, 10), dm_wide_resnet(10, 4),
        MixingNet(first=(256, 64), second=(512, 128), widths=(384, 640, 1024)), BAI2023_EDM_CIFAR10,
    )
    ours.std_model.load_state_dict(std.state_dict(), strict=True)
    ours.rob_model.load_state_dict(rob.state_dict(), strict=True)
    ours.policy_net.load_state_dict(comp.policy_net.state_dict(), strict=True)
    ours.bn.load_state_dict(comp.bn.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = theirs.eval()(x), ours.eval()(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5), (got - expected).abs().max()


def test_pyautoattack_resnet18_matches_its_example_definition() -> None:
    spec = importlib.util.spec_from_file_location("_pyautoattack_example_resnet", pyautoattack_resnet18_path().parent / "resnet.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(6)
    _same_logits(example.ResNet18(), cifar_resnet18(), torch.rand(2, 3, 32, 32))


def test_oracle_install_does_not_shadow_this_repos_tests() -> None:
    stray = _package_dir("robustbench").parent / "tests" / "__init__.py"
    assert not stray.exists(), (
        f"robustbench's wheel installed a top-level `tests` package ({stray.parent}) that shadows this repository's "
        "tests in spawned processes; delete that folder after `pip install --no-deps robustbench==1.1.1`"
    )
