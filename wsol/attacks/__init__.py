"""Attacks: every perturbation wsol makes, built on the sign-ascent core in :mod:`wsol.attacks.core`."""
from wsol.attacks.adversarial import pgd_attack
from wsol.attacks.art import art_attack, attribution_loss, topk_positions
from wsol.attacks.core import AscentResult, normal_noise, project_linf, random_delta, random_start_point, sample_generators, sign_ascent, uniform_noise
from wsol.attacks.gradients import frozen_parameters, input_gradients, strongest_wrong_class, unwrap

__all__ = [
    "AscentResult",
    "art_attack",
    "attribution_loss",
    "frozen_parameters",
    "input_gradients",
    "normal_noise",
    "pgd_attack",
    "project_linf",
    "random_delta",
    "random_start_point",
    "sample_generators",
    "sign_ascent",
    "strongest_wrong_class",
    "topk_positions",
    "uniform_noise",
    "unwrap",
]
