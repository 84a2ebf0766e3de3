"""Training: ``train(config, out)`` runs natural, PGD, ART or ART+PGD training with one shared loop."""
from wsol.attacks import art_attack, attribution_loss, input_gradients, strongest_wrong_class
from wsol.train.loop import NonFiniteLossError, default_config_path, evaluate, train
from wsol.train.methods import METHODS, StepResult, get_method

__all__ = [
    "METHODS",
    "NonFiniteLossError",
    "StepResult",
    "art_attack",
    "attribution_loss",
    "default_config_path",
    "evaluate",
    "get_method",
    "input_gradients",
    "strongest_wrong_class",
    "train",
]
