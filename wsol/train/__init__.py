"""Training methods: one step function a method (natural, pgd, art, art-pgd) and ART's pieces.

The training loop itself is a job: :func:`wsol.jobs.train.train`.
"""
from wsol.attacks import art_attack, attribution_loss, input_gradients, strongest_wrong_class
from wsol.train.methods import METHODS, StepResult, get_method

__all__ = [
    "METHODS",
    "StepResult",
    "art_attack",
    "attribution_loss",
    "get_method",
    "input_gradients",
    "strongest_wrong_class",
]
