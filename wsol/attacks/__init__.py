"""Attacks: adversarial (ℓ∞ PGD) here; attributional attacks build on the same helpers."""
from wsol.attacks.adversarial import pgd_attack, project_linf, random_start_point, uniform_noise

__all__ = ["pgd_attack", "project_linf", "random_start_point", "uniform_noise"]
