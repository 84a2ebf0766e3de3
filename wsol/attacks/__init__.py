"""Attacks: every perturbation wsol makes, built on the sign-ascent core in :mod:`wsol.attacks.core`."""
from wsol.attacks.adversarial import pgd_attack
from wsol.attacks.core import AscentResult, project_linf, random_start_point, sign_ascent, uniform_noise

__all__ = ["AscentResult", "pgd_attack", "project_linf", "random_start_point", "sign_ascent", "uniform_noise"]
