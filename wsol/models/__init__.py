"""Model zoo: ``build_model(arch, num_classes, weights=None)`` → :class:`Classifier`."""
from wsol.data.base import IMAGENET_MEAN, IMAGENET_STD
from wsol.models.activations import SwitchableReLU, set_activation, softplus
from wsol.models.build import MODELS, build_model, load_model, save_model
from wsol.models.classifier import Classifier
from wsol.models.robustbench import load_robust_model, robust_model_names

__all__ = [
    "MODELS",
    "build_model",
    "load_model",
    "save_model",
    "Classifier",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SwitchableReLU",
    "set_activation",
    "softplus",
    "load_robust_model",
    "robust_model_names",
]
