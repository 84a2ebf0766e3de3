"""The file names of each kind of run folder wsol writes, and how a run names its dataset, defined once.

Here, below every layer, so that the jobs that write the folders, the jobs that must recognise another command's
folder, and the reports that read them all use the same names without importing each other.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
"""A training run: its checkpoint, resume state and per-epoch records (``config.yaml`` marks nothing: a user's own file may be one)."""
SAMPLES_FILE = "samples.csv"
SUMMARY_FILE = "summary.json"
ATTACK_CONFIG_FILE = "config.json"
MAPS_FILE = "maps.npz"
"""An attack run: per-sample rows, summary, the arguments (whose ``attack`` names the kind) and the first samples' maps."""
ATTACK_RUN_FILES = (SUMMARY_FILE, SAMPLES_FILE, MAPS_FILE, ATTACK_CONFIG_FILE)
"""Every file of an attack run folder: nothing else writes over them. In the order a start-over removes them (all but
``config.json``, which it writes anew): the summary, which reads as the finished run's, before the rows a rerun resumes from."""
CHECKPOINT_DIGEST = "checkpoint_sha256"
"""The key under which localize's batch files and an attack's ``config.json`` keep the checkpoint file's SHA-256:
results of a checkpoint rewritten since (retrained into the same path) are dropped, not resumed."""
DEMO_ARGUMENTS_FILE = "demo.json"
"""A ``wsol demo`` output folder: its arguments."""
ROBUSTNESS_RUN_FILE = "run.json"
"""A ``wsol robustness evaluate/per-class`` run folder: its arguments; a study holds one per model under ``models/``."""
ROBUSTNESS_CHUNK_FILES = "*.rank*.jsonl"
"""A robustness run's per-chunk results of every kind and rank (``<kind>.rank<r>.jsonl``): what a rerun resumes from."""


def dataset_label(name: str, options: Optional[Mapping[str, Any]] = None) -> str:
    """A run's dataset as reports name it, with the loader options it was read with (``cifar10c (corruption=fog,
    severity=5)``): the same name under other options is other images."""
    shown = ", ".join(f"{k}={v}" for k, v in sorted((options or {}).items()))
    return f"{name} ({shown})" if shown else name


__all__ = [
    "ATTACK_CONFIG_FILE", "ATTACK_RUN_FILES", "CHECKPOINT_DIGEST", "DEMO_ARGUMENTS_FILE", "MAPS_FILE", "METRICS_FILE", "MODEL_FILE", "ROBUSTNESS_CHUNK_FILES", "ROBUSTNESS_RUN_FILE",
    "SAMPLES_FILE", "STATE_FILE", "SUMMARY_FILE", "dataset_label",
]
