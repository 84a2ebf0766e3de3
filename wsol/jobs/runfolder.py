"""Run-folder helpers shared by every job: sharding samples across ranks, gathering results,
resume bookkeeping, rank-0 atomic writes and the run-folder lock.

One process is plain single-process code; under ``torchrun`` ranks take strided shards of the
samples, results are gathered on every rank, and only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from wsol.utils.numbers import parse_number
from wsol.errors import ConfigError

from wsol.utils import distributed as dist
from wsol.runfiles import (  # the run-folder file names; the jobs take them from here too
    ATTACK_CONFIG_FILE, ATTACK_RUN_FILES, CHECKPOINT_DIGEST, DEMO_ARGUMENTS_FILE, MAPS_FILE, METRICS_FILE, MODEL_FILE, ROBUSTNESS_CHUNK_FILES,
    ROBUSTNESS_RUN_FILE, SAMPLES_FILE, STATE_FILE, SUMMARY_FILE, dataset_label,
)
from wsol.utils.io import LOCK_NAME, atomic_write_json, atomic_write_text, json_text, read_jsonl, remove_folder, run_folder_lock

T = TypeVar("T")
PathLike = Union[str, Path]


def run_kind(folder: PathLike) -> Optional[Tuple[str, List[str]]]:
    """What run ``folder`` holds, by its marker files: (kind, the markers found) or None (no run, or not a folder).

    Kinds: ``training``, ``attribution attack``, ``targeted attack`` (an attack run's ``config.json`` names it),
    ``demo``, ``robustness``, ``robustness study``. ``config.yaml`` alone marks nothing: a user's own file may be one.
    """
    out = Path(folder)
    if not out.is_dir():
        return None
    markers = [("training", [MODEL_FILE, STATE_FILE, METRICS_FILE]), ("attack", [SAMPLES_FILE, SUMMARY_FILE]),
               ("demo", [DEMO_ARGUMENTS_FILE]), ("robustness", [ROBUSTNESS_RUN_FILE, ROBUSTNESS_CHUNK_FILES]),
               ("robustness study", [f"models/*/{ROBUSTNESS_RUN_FILE}"])]
    for kind, patterns in markers:
        found = sorted({str(p.relative_to(out)) for pattern in patterns for p in out.glob(pattern)})
        if found and kind == "attack":
            try:
                kind = f"{json.loads((out / ATTACK_CONFIG_FILE).read_text())['attack']} attack"
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an attack run without a readable config.json: of either kind
        if found:
            return kind, found
    return None


def refuse_other_run(out: PathLike, kind: str) -> None:
    """Refuse an ``--out`` folder that holds the run of another command (``kind`` is this job's, as
    :func:`run_kind` names it): the two runs' files would mix and the second could overwrite the first's
    ``config.json`` or ``samples.csv``. A subfolder of it is fine, and so is a folder holding a run of the same kind
    (the job's own resume check decides there)."""
    held = run_kind(out)
    if held is not None and held[0] != kind:
        other, found = held
        article = "an" if other[0] in "aeiou" else "a"
        raise ConfigError(f"--out {out} holds {article} {other} run ({', '.join(found[:3])}); the {kind} files would mix into it: "
                          f"give a folder of its own, e.g. --out {Path(out) / kind.replace(' ', '-')}")


RUN_FILES_BESIDE = {"training": ("model.json", "config.yaml"), "attack": ATTACK_RUN_FILES, "demo": ("report.md",),
                    "robustness": ("report.md",), "robustness study": ("report.md",)}
"""Files of a run that do not mark it (see :func:`run_kind`) but are its own: an ``--out`` file never replaces them."""


def refuse_run_file(out: PathLike) -> None:
    """Refuse an ``--out`` file that is one of the own files of the run in its folder (``--out runs/x/model.json``
    would break the checkpoint, ``--out runs/ifia/summary.json`` the attack run); other names there are fine."""
    target = Path(out)
    held = run_kind(target.parent)
    if held is None:
        return
    kind, found = held
    if target.name in found or target.name in RUN_FILES_BESIDE["attack" if kind.endswith("attack") else kind]:
        raise ConfigError(f"--out {out} is the {target.name} of the {kind} run in {target.parent}; writing there would destroy the run: "
                          "give another file name")


def shard_indices(n: int) -> List[int]:
    """The sample indices this rank handles: ``rank, rank + world, ...`` (all of them in one process)."""
    return list(range(dist.rank(), n, dist.world_size()))


def shard(dataset: Dataset) -> Dataset:
    """This rank's strided shard of ``dataset`` (the dataset itself in one process)."""
    if dist.world_size() == 1:
        return dataset
    return Subset(dataset, shard_indices(len(dataset)))  # type: ignore[arg-type]


def gather(local: Sequence[T]) -> List[T]:
    """Every rank's ``local`` items concatenated in rank order, on every rank (a copy in one process)."""
    return [item for part in dist.gather_objects(list(local)) for item in part]


def select_samples(total: int, n: Optional[int], seed: int, *, default: int, first: bool = False) -> List[int]:
    """``n`` distinct dataset indices out of ``total`` drawn from ``seed``, sorted: the evaluation subset of
    every attack and robustness job (the same seed picks the same images in every job); with ``first``, the split's
    first ``n`` in its order instead (RobustBench's ``load_cifar10(n_examples=n)`` takes those). ``n`` None (the user
    gave no --n) takes ``default`` samples, or the whole split when it is smaller; an explicit ``n`` above
    ``total`` is refused."""
    if n is None:
        n = min(default, total)
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if n > total:
        raise ConfigError(f"--n {n} asks for more samples than the split holds ({total} images); give --n {total} or fewer")
    if first:
        return list(range(n))
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(total, generator=gen)[:n].tolist())


def parse_eps(text: str, name: str = "--eps", *, norm: str = "linf", positive: bool = False) -> float:
    """A radius or step in pixel units from ``8/255`` or ``0.03``, parsed as configs parse it (and at 0 refused when
    ``positive``: a step of 0 never moves). In ℓ∞ it must lie in [0, 1], and a bare whole number up to 255 (``8``, ``1``) is
    the /255 forgotten (ℓ∞ ε = 1 lets the attack paint any image), refused with the fraction meant. An ℓ2 radius is any
    number ≥ 0: ε = 1.0 is CIFAR-10's usual ℓ2 budget and larger ones are common on larger images."""
    value = parse_number(text, name)
    if norm == "linf":
        whole = "/" not in str(text) and 1 <= value <= 255 and value == int(value)  # above 255 no /255 makes a radius
        if whole:
            whole_range = " (ℓ∞ 1 reaches every image; write 255/255 if you mean it)" if value == 1 else ""
            raise ConfigError(f"{name} {text} is in pixel units of [0, 1] images: did you mean {name} {int(value)}/255?{whole_range}")
        if not 0 <= value <= 1:
            raise ConfigError(f"{name} is in pixel units of [0, 1] images and must lie in [0, 1] (e.g. 8/255), got {text!r}")
    elif not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} is an ℓ2 radius in pixel units of [0, 1] images and must be a number ≥ 0 (e.g. 0.5), got {text!r}")
    if positive and value == 0:
        raise ConfigError(f"{name} must be above 0 (e.g. 1/255): a step of 0 leaves every image as it is, got {text!r}")
    return value


def _may_name_apart(trained_on: str, dataset: str) -> bool:
    """Whether two datasets can hold the same classes under other names: wsolmeta lays out another one's images (CUB's,
    in wsolevaluation's metadata), and CIFAR-10-C is CIFAR-10 corrupted, named from its own list."""
    return "wsolmeta" in (trained_on, dataset) or {trained_on, dataset} == {"cifar10", "cifar10c"}


def _classes_text(checkpoint: PathLike, dataset: str, names: Sequence[str]) -> Optional[Tuple[Optional[str], str]]:
    """(the dataset a wsol checkpoint records, a text saying its classes are not ``dataset``'s) when its recorded class
    names are not ``names`` (same count, other names or order); None when they agree or are not recorded (no sidecar)."""
    from wsol.models.checkpoint import read_sidecar

    meta = read_sidecar(Path(checkpoint)) or {}
    trained = [str(n) for n in meta.get("class_names") or []]
    if not trained or not names or trained == [str(n) for n in names]:
        return None

    def head(items: Sequence[str]) -> str:
        return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")

    recorded = meta.get("dataset")
    return recorded, (f"checkpoint {checkpoint} was trained on {recorded or 'another dataset'} with classes {head(trained)}, "
                      f"but {dataset} has {head([str(n) for n in names])}")


def check_checkpoint_dataset(checkpoint: PathLike, dataset: str, names: Sequence[str]) -> None:
    """Refuse a wsol checkpoint recorded as trained on another dataset whose class names are not ``dataset``'s (a shapes
    model on cifar10): its accuracies there mean nothing, and a run can take hours. Where the names may differ for the
    same classes (wsolmeta, CIFAR-10-C) or no dataset is recorded, :func:`class_names_note` notes it instead."""
    found = _classes_text(checkpoint, dataset, names)
    if found and found[0] and found[0] != dataset and not _may_name_apart(found[0], dataset):
        raise ConfigError(f"{found[1]}: its accuracies there would mean nothing; pass a checkpoint trained on {dataset}, or --dataset {found[0]}")


def class_names_note(checkpoint: PathLike, dataset: str, names: Sequence[str]) -> Optional[str]:
    """A note when a wsol checkpoint's recorded classes are not ``dataset``'s and :func:`check_checkpoint_dataset` let it
    pass (no dataset recorded, or datasets that may name the same classes apart); None when they agree."""
    found = _classes_text(checkpoint, dataset, names)
    return f"{found[1]}: if it is another dataset, its accuracies here mean nothing" if found else None


def fewer_images_note(split: str, available: int, n: int) -> Optional[str]:
    """A note when a figure asked for ``n`` images of a split that holds fewer (it draws them all); None otherwise."""
    if available >= n:
        return None
    return f"the {split} split has {available} images, fewer than --n {n}: drawing all {available}"


def note(text: Optional[str]) -> None:
    """Print ``note: text`` on stderr from rank 0 (nothing for None)."""
    if text and dist.is_main_process():
        print(f"note: {text}", file=sys.stderr, flush=True)


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` atomically from rank 0 only."""
    if dist.is_main_process():
        atomic_write_text(path, text)


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically from rank 0 only."""
    if dist.is_main_process():
        atomic_write_json(path, obj)


def keep_records_until(path: Path, epoch: int) -> List[Dict[str, Any]]:
    """Resume bookkeeping: drop the lines of ``metrics.jsonl`` written after ``epoch`` (an epoch that
    ran but was not checkpointed) and return the kept records."""
    kept = [r for r in read_jsonl(path) if int(r.get("epoch", 0)) <= epoch]
    atomic_write_text(path, "".join(json_text(r) + "\n" for r in kept))
    return kept


def config_differences(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two config dicts (for resume checks)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, prefix + key + ".")
        elif a != b:
            diffs.append(prefix + key)
    return diffs


def same_radius(a: Any, b: Any) -> bool:
    """Whether two spellings of a pixel-unit radius (``8/255``, ``0.0313725490``, a float from a JSON file) are the same
    radius to the float32 the attacks compute in: a pasted decimal with fewer digits does not make another run."""
    try:
        return bool(np.float32(parse_number(a)) == np.float32(parse_number(b)))
    except (ConfigError, TypeError, ValueError):
        return False


def _value_at(record: Mapping[str, Any], dotted: str) -> Any:
    """The value of a dotted key (``dataset_options.severity``) of a run record; None where a level is missing."""
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _shown(value: Any, limit: int = 60) -> str:
    """A recorded value as a user reads it in one line: lists and mappings without brackets, floats short, long ones cut
    at the front."""
    if value is None:
        text = "none"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ",".join(_shown(v, limit) for v in value) or "none"
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}={_shown(v, limit)}" for k, v in value.items()) or "none"
    else:
        text = str(value)
    return text if len(text) <= limit else "…" + text[1 - limit:]  # the end: a path's file name, a list's last items


def differences_text(keys: Sequence[str], old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``n was 500, now 64; eps was 0.0313725, now 0.0156863`` for the dotted ``keys`` in which two run records differ:
    a refusal says what differs, so the user can choose which to change."""
    return "; ".join(f"{key} was {_shown(_value_at(old, key))}, now {_shown(_value_at(new, key))}" for key in keys)


def rewritten_since(old: Mapping[str, Any], new: Mapping[str, Any], key: str = CHECKPOINT_DIGEST) -> bool:
    """Whether the file(s) whose SHA-256 a run record keeps under ``key`` were rewritten since ``old`` was recorded (a model
    retrained into the same path), so that the results recorded with ``old`` are another model's. A record without the
    digest (written before wsol kept it, or of weights deleted since) has nothing to compare: the same file(s)."""
    return old.get(key) is not None and new.get(key) is not None and old[key] != new[key]


def start_over(folder: PathLike, what: str, files: str, stale: Sequence[Path]) -> None:
    """Drop the ``what`` (rows, batches, results) that ``folder`` holds of an earlier version of ``files``
    (:func:`rewritten_since`): say so, then rank 0 removes ``stale`` in the order given (a file unlinked, a folder
    removed whole). Call it before the new run's record is written, with what reads as the finished run's (a summary,
    a report) first and what a rerun resumes from last: a kill between two removals leaves the old record beside the old
    results, so the rerun starts over again instead of taking the old model's results for the new one's."""
    note(f"{folder} holds {what} of an earlier version of {files} (rewritten since): starting over")
    remove_outputs(stale)


def remove_outputs(paths: Sequence[Path]) -> None:
    """Rank 0 removes ``paths`` in the order given (a file unlinked, a folder removed whole, a missing one skipped)."""
    if dist.is_main_process():
        for path in paths:
            if path.is_dir():
                remove_folder(path)
            else:
                path.unlink(missing_ok=True)


def finished_epochs(model_sidecar: Path) -> int:
    """The epoch recorded in a checkpoint's JSON sidecar (0 when there is none yet)."""
    if not model_sidecar.is_file():
        return 0
    return int(json.loads(model_sidecar.read_text()).get("epoch", 0))


@contextmanager
def lock_run_folder(path: PathLike, *, transient: bool = False) -> Iterator[Path]:
    """Hold run folder ``path`` (created if missing) for the duration of a job: one writer per folder.

    Rank 0 takes :func:`wsol.utils.io.run_folder_lock`, so a second job into a folder in use fails
    with a one-line error; other ranks only write through rank 0. When the job fails, the lock file
    and the folders this call created (the run folder and any missing parents, while empty) are
    removed again, so a refused run leaves nothing behind. ``transient`` (a job whose output is one file in
    a folder of the user's, e.g. ``wsol localize --out preds.json``) also removes a lock file it created when
    the job succeeds (also one a killed run left), so the user's folder keeps no ``.lock``.
    """
    folder = Path(path)
    if not dist.is_main_process():
        yield folder
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    lock_created = not (folder / LOCK_NAME).exists()
    try:
        with run_folder_lock(folder):
            yield folder
            if transient:
                (folder / LOCK_NAME).unlink(missing_ok=True)  # still held: no other job can slip in
    except BaseException:
        if lock_created:
            (folder / LOCK_NAME).unlink(missing_ok=True)
        created = folder
        while created != existing and created.is_dir() and not any(created.iterdir()):
            created.rmdir()  # the run folder and the parents this call made, while they are empty
            created = created.parent
        raise


__all__ = [
    "check_checkpoint_dataset",
    "class_names_note",
    "config_differences",
    "dataset_label",
    "differences_text",
    "fewer_images_note",
    "finished_epochs",
    "gather",
    "keep_records_until",
    "lock_run_folder",
    "note",
    "parse_eps",
    "refuse_other_run",
    "refuse_run_file",
    "remove_outputs",
    "rewritten_since",
    "run_kind",
    "same_radius",
    "select_samples",
    "shard",
    "shard_indices",
    "start_over",
    "write_json",
    "write_text",
]
