"""Robustness tables as pure functions on per-sample results.

Inputs are per-sample tensors (labels N; robust flags N or E×N over an ε grid; adversarial
predictions N), so a job can compute them from the per-sample rows it wrote. Accuracies are
fractions in [0, 1]; a class without samples gets NaN. The rows functions return lists of dicts
for :func:`wsol.export.tables.markdown_table` / :func:`wsol.export.tables.write_csv`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from wsol.export.tables import Interval
from wsol.metrics.intervals import wilson_cell


def per_class_accuracy(correct: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy per class: ``correct`` N → C, or E×N → E×C (one row per ε), in float64 so that a
    written ratio of counts reads as itself (7/10 as 0.7, not float32's 0.699999988)."""
    flags = correct.double().reshape(-1, correct.shape[-1])
    labels = labels.long().to(flags.device)
    hits = torch.zeros(flags.shape[0], num_classes, dtype=torch.float64, device=flags.device).index_add_(1, labels, flags)
    counts = torch.bincount(labels, minlength=num_classes).double()
    acc = hits / counts
    acc[:, counts == 0] = float("nan")
    return acc if correct.dim() > 1 else acc[0]


def step_deltas(acc: torch.Tensor) -> torch.Tensor:
    """Per-step change along the ε axis: E×C → E×C with row 0 = 0 (accuracy at ε_k − at ε_{k−1})."""
    return torch.cat([torch.zeros_like(acc[:1]), acc[1:] - acc[:-1]])


def total_drop(acc: torch.Tensor) -> torch.Tensor:
    """Per-class change from the first to the last ε (negative = accuracy lost): E×C → C."""
    return acc[-1] - acc[0]


def class_mean(values: torch.Tensor) -> torch.Tensor:
    """Average over classes (last axis), ignoring classes without samples."""
    return values.nanmean(-1)


def worst_class(acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, accuracy) of the least accurate class, per row: C → scalars, E×C → E."""
    filled = torch.where(torch.isnan(acc), torch.full_like(acc, float("inf")), acc)
    value, index = filled.min(-1)
    return index, value


def tied_with_worst(acc: torch.Tensor) -> torch.Tensor:
    """How many other classes share the worst class's accuracy, per row (C → scalar, E×C → E); NaN classes ignored.
    :func:`worst_class` names the first of them in class order, so a table naming it alone would single out one class
    among equals (common on small samples, where several classes sit at 0)."""
    _, value = worst_class(acc)
    return (acc == value.unsqueeze(-1)).sum(-1) - 1


def class_spread(acc: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Spread across classes, per row: ``range`` (max − min) and ``std`` (population), NaN classes ignored."""
    valid = ~torch.isnan(acc)
    hi = torch.where(valid, acc, torch.full_like(acc, float("-inf"))).amax(-1)
    lo = torch.where(valid, acc, torch.full_like(acc, float("inf"))).amin(-1)
    mean = acc.nanmean(-1, keepdim=True)
    var = torch.where(valid, (acc - mean) ** 2, torch.zeros_like(acc)).sum(-1) / valid.sum(-1).clamp_min(1)
    return {"range": hi - lo, "std": var.sqrt()}


def attack_confusion(labels: torch.Tensor, adv_pred: torch.Tensor, num_classes: int,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """C×C counts: row = true class, column = prediction under attack (optionally only where ``mask``).

    Pass ``mask`` = clean-correct to see which class each attack pushes correctly classified images into.
    """
    labels, adv_pred = labels.long(), adv_pred.long().to(labels.device)
    if mask is not None:
        labels, adv_pred = labels[mask], adv_pred[mask]
    flat = torch.bincount(labels * num_classes + adv_pred, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def linear_linf_robust(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact ℓ∞ robustness (N bools) of the affine classifier ``x.flatten(1) @ weight.T + bias`` on images in
    [0, 1]: the truth an attack's robust accuracy estimates, so attacks can be checked against it.

    Each wrong class's largest logit gain inside the ε-ball ∩ [0, 1]^d is reached pixel by pixel, moving each
    pixel by min(ε, its room to the box) in the sign of the weight difference; a point is robust when no wrong class
    beats the true one even there (so a misclassified point never is). A tie goes to the lower class index, as ``argmax``
    (the prediction) gives it: a wrong class that only reaches the true logit breaks the point when its index is the lower.
    """
    flat = x.flatten(1).to(weight.dtype)
    y = y.long()
    with torch.no_grad():
        logits = flat @ weight.T + bias
        up, down = (1 - flat).clamp(0, eps), flat.clamp(0, eps)
        robust = torch.ones_like(y, dtype=torch.bool)
        true_logit = logits.gather(1, y[:, None])[:, 0]
        for j in range(weight.shape[0]):
            diff = weight[j][None] - weight[y]
            gain = torch.where(diff > 0, diff * up, -diff * down).sum(1)
            reached = logits[:, j] + gain
            robust &= (y == j) | (reached < true_logit) | ((reached == true_logit) & (y < j))
    return robust


def paired_accuracy_difference(before: torch.Tensor, after: torch.Tensor) -> Dict[str, Any]:
    """Two models' correctness on the same samples (boolean vectors): the accuracy difference ``after − before``, the
    discordant pairs (samples only ``after`` gets right, only ``before`` gets right) and McNemar's exact two-sided p-value
    (a binomial test on the discordant pairs): whether the difference is one these samples show, which two per-model
    intervals computed apart cannot say. ``p`` is None without a discordant pair."""
    from scipy.stats import binomtest

    before, after = before.bool(), after.bool()
    if before.shape != after.shape:
        raise ValueError(f"paired vectors need the same samples, got {tuple(before.shape)} and {tuple(after.shape)}")
    only_after, only_before = int((after & ~before).sum()), int((before & ~after).sum())
    discordant = only_after + only_before
    return {"n": int(before.numel()), "difference": (only_after - only_before) / max(before.numel(), 1),
            "only_after": only_after, "only_before": only_before,
            "p": float(binomtest(only_after, discordant, 0.5).pvalue) if discordant else None}


def accuracy_interval(accuracy: float, n: int) -> Interval:
    """The 95% Wilson interval of an accuracy over ``n`` samples (its successes: ``accuracy · n``, rounded), as a table
    value; undefined for no sample."""
    return wilson_cell(round(accuracy * n), n)


def ladder_rows(model: str, clean_accuracy: float, rungs: Sequence[Any], n: Optional[int] = None) -> List[Dict[str, Any]]:
    """The study's first table for one model: initial accuracy, then per attack minutes, accuracy, delta.

    ``rungs`` are :class:`wsol.attacks.autoattack.Rung` (attack, minutes, robust_accuracy, delta). With ``n``, the
    number of samples, each row also gets ``n`` and the 95% Wilson interval of its accuracy.
    """
    def row(attack: str, minutes: Optional[float], accuracy: float, delta: Optional[float]) -> Dict[str, Any]:
        out: Dict[str, Any] = {"model": model, "attack": attack, "minutes": minutes, "accuracy": accuracy, "delta": delta}
        if n is not None:
            out.update({"n": n, "95% CI": accuracy_interval(accuracy, n)})
        return out

    return [row("initial accuracy", None, clean_accuracy, None)] + [row(r.attack, r.minutes, r.robust_accuracy, r.delta) for r in rungs]


def _named(c: int, class_names: Optional[Sequence[str]]) -> Any:
    """Class ``c`` in a table: the dataset's class name when the caller gives the names, else the index."""
    return str(class_names[c]) if class_names else c


def sweep_rows(model: str, eps_labels: Sequence[Any], acc: torch.Tensor, overall: torch.Tensor, *,
               class_names: Optional[Sequence[str]] = None, eps_column: str = "eps") -> List[Dict[str, Any]]:
    """The study's second table for one model, one record per ε: every class's accuracy and step delta, the model's
    average delta over classes and its overall accuracy. The ε values go in ``eps_column`` (a header that names their
    unit, such as ``eps (x/255)``). The seed's TOTAL row under them is :func:`sweep_total_row`."""
    deltas = step_deltas(acc)
    num_classes = acc.shape[1]
    heads = [str(class_names[c]) if class_names else f"class {c}" for c in range(num_classes)]
    deltas_by = [f"delta {_named(c, class_names)}" for c in range(num_classes)]
    rows: List[Dict[str, Any]] = []
    for k, label in enumerate(eps_labels):
        row: Dict[str, Any] = {"model": model, eps_column: label}
        for c in range(num_classes):
            row[heads[c]] = float(acc[k, c])
            row[deltas_by[c]] = None if k == 0 else float(deltas[k, c])
        row["average delta"] = None if k == 0 else float(class_mean(deltas[k]))
        row["overall"] = float(overall[k])
        rows.append(row)
    return rows


def sweep_total_row(model: str, acc: torch.Tensor, overall: torch.Tensor, *,
                    class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The seed's TOTAL row of :func:`sweep_rows`' table: each class's total drop (last ε minus first) in its delta
    column, their mean over classes in ``average delta`` and the overall accuracy's change in ``overall``. A record of
    another kind than the per-ε rows (no ε, no accuracy), so a CSV keeps it apart; a Markdown table shows it under them
    with ``TOTAL`` in the ε column (:func:`with_total_row`)."""
    drops = total_drop(acc)
    total: Dict[str, Any] = {"model": model}
    total.update({f"delta {_named(c, class_names)}": float(drops[c]) for c in range(acc.shape[1])})
    total["average delta"] = float(class_mean(drops))
    total["overall"] = float(overall[-1] - overall[0])
    return total


def with_total_row(rows: Sequence[Dict[str, Any]], total: Dict[str, Any], eps_column: str = "eps") -> List[Dict[str, Any]]:
    """A model's per-ε sweep rows with its TOTAL row under them, as the seed's table shows it (for Markdown only: the ε
    column then holds the text ``TOTAL``)."""
    return [*rows, {**total, eps_column: "TOTAL"}]


def across_models_rows(acc_by_model: Mapping[str, torch.Tensor], *,
                       class_names: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Per class, the total drop for each model and its average across models (the study's AVG row)."""
    drops = {m: total_drop(a) for m, a in acc_by_model.items()}
    stacked = torch.stack(list(drops.values()))
    mean = stacked.nanmean(0)
    rows = []
    for c in range(stacked.shape[1]):
        row: Dict[str, Any] = {"class": _named(c, class_names)}
        row.update({m: float(d[c]) for m, d in drops.items()})
        row["average"] = float(mean[c])
        rows.append(row)
    return rows


def summary_rows(model: str, eps_labels: Sequence[Any], acc: torch.Tensor, *, class_names: Optional[Sequence[str]] = None,
                 counts: Optional[torch.Tensor] = None, eps_column: str = "eps") -> List[Dict[str, Any]]:
    """Per ε (in ``eps_column``): mean class accuracy, worst class and its accuracy, range and std across classes. With ``counts``
    (samples per class), the worst class's sample count and the 95% Wilson interval of its accuracy too: a
    worst class of a few samples is a weak claim."""
    index, value = worst_class(acc)
    spread = class_spread(acc)
    rows = []
    for k, label in enumerate(eps_labels):
        row: Dict[str, Any] = {"model": model, eps_column: label, "mean class accuracy": float(class_mean(acc[k])),
                               "worst class": _named(int(index[k]), class_names), "worst-class accuracy": float(value[k])}
        if counts is not None:
            size = int(counts[int(index[k])])
            row.update({"worst-class n": size, "worst-class 95% CI": accuracy_interval(float(value[k]), size)})
        row.update({"range": float(spread["range"][k]), "std": float(spread["std"][k])})
        rows.append(row)
    return rows


__all__ = [
    "across_models_rows", "attack_confusion", "class_mean", "class_spread", "ladder_rows", "paired_accuracy_difference",
    "accuracy_interval", "per_class_accuracy", "step_deltas", "summary_rows", "sweep_rows", "sweep_total_row", "tied_with_worst",
    "total_drop", "with_total_row", "worst_class",
]
