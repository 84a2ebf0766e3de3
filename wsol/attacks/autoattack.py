"""AutoAttack (Croce & Hein) as a ladder we run ourselves from ``pyautoattack``'s attack objects.

``pyautoattack`` does the attacking (APGD, FAB, Square are not re-implemented here); this module
does the bookkeeping its ``run_standard_evaluation`` does not return: per attack the robust
accuracy, its delta and the wall-clock minutes, and per sample whether it was clean-correct, which
attack broke it and the adversarial prediction. Each attack sees only the points still robust,
batched exactly as ``run_standard_evaluation`` batches them (the robust indices in order, split
into ``batch_size`` chunks), so with the same seed both give the same robust accuracy.

A point is robust only if every attack so far failed on it (the pointwise worst case, never an
average of per-attack accuracies). Every adversarial example is checked to lie in the ε-ball and in
[0, 1] and is re-evaluated with the model: "broken" means the model really misclassifies it.
pyautoattack's own defaults (eps 0.3, device 'cpu', a clock-based seed) are never relied on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from wsol.errors import ConfigError, WsolError, did_you_mean
from wsol.utils.numbers import comma_list, counted

ATTACKS: Tuple[str, ...] = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
LADDERS: Dict[str, Tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "study": ("apgd-ce", "apgd-dlr", "fab"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
}
VERSIONS = ("standard", "plus")
"""The ladders that are pyautoattack versions with their own settings; ``study`` and comma lists are its ``custom`` version."""
NORMS: Dict[str, str] = {"linf": "Linf", "l2": "L2"}
TARGETED = ("apgd-t", "fab-t")
MIN_CLASSES: Dict[str, int] = {"apgd-dlr": 3, "apgd-t": 4}
"""The DLR loss divides by z_max − z_3rd and its targeted form needs z_4th: classes each attack needs (others: 2)."""
OVERRIDE_USERS: Dict[str, Tuple[str, ...]] = {
    "n_iter": ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t"),
    "n_restarts": ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "square"),
    "n_queries": ("square",),
}
"""The attacks each budget override changes (FAB-T runs one restart whatever --n-restarts, as AutoAttack runs it)."""
OVERRIDE_EXCEPTIONS: Dict[Tuple[str, str], Tuple[str, str]] = {
    ("n_iter", "square"): ("n_queries", "Square's budget is its query count, --n-queries (AutoAttack's 5,000 unless given)"),
}
"""(override, attack) pairs where a budget option leaves an attack of the run as it was, a trap for a user who shrinks
--n-iter for a quick try: each with the option that does govern the attack and why. Left out: --n-queries (its help
says it is Square's alone) and FAB-T's single restart (AutoAttack's own rule, which --help states)."""
_BALL_TOL = 1e-5


def _ladder_name(ladder: Union[str, Sequence[str]]) -> Optional[str]:
    """A ladder given as text, without case or surrounding spaces (None for a list of attacks)."""
    return ladder.strip().lower() if isinstance(ladder, str) else None


def resolve_ladder(ladder: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """The attack names of a ladder: ``standard``, ``study``, ``plus`` or a comma list of names."""
    names = LADDERS.get(_ladder_name(ladder))
    if names is None:
        parts = comma_list(ladder, "AutoAttack ladder") if isinstance(ladder, str) else [str(p).strip() for p in ladder]
        names = tuple(p.lower() for p in parts if p)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        what = f"attack {', '.join(map(repr, unknown))} in {ladder!r}" if unknown and len(names) > 1 else f"attack or ladder {ladder!r}"
        hint = did_you_mean(unknown[0], [*LADDERS, *ATTACKS]) if len(unknown) == 1 else ""
        raise ConfigError(f"unknown {what}: use one of {', '.join(LADDERS)} or a comma list of {', '.join(ATTACKS)}{hint}")
    if len(set(names)) != len(names):
        raise ConfigError(f"AutoAttack ladder {ladder!r} names an attack twice; list each attack once")
    return tuple(names)


def build_autoattack(
    model: nn.Module,
    ladder: Union[str, Sequence[str]],
    *,
    eps: float,
    norm: str,
    seed: int,
    device: Union[torch.device, str],
    n_iter: Optional[int] = None,
    n_restarts: Optional[int] = None,
    n_queries: Optional[int] = None,
    n_target_classes: Optional[int] = None,
) -> Any:
    """A ``pyautoattack.AutoAttack`` with eps, norm, seed and device set explicitly.

    Named ladders take that version's settings (``study`` and comma lists are pyautoattack's
    ``custom`` version: its constructor settings). The optional overrides apply to every attack
    object that has the setting (small budgets for tests and benches).
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError as err:
        raise WsolError("pyautoattack is not installed: `pip install pyautoattack` (wsol runs AutoAttack's attacks from it)") from err

    names = resolve_ladder(ladder)
    if norm.lower() not in NORMS:
        raise ConfigError(f"unknown AutoAttack norm {norm!r}: use one of {', '.join(NORMS)}")
    if eps < 0:
        raise ConfigError(f"AutoAttack eps must not be negative, got {eps}")
    version = _version(ladder, names)
    attacks = None if version != "custom" else list(names)
    aa = AutoAttack(model, attacks=attacks, device=device, eps=float(eps), norm=NORMS[norm.lower()],
                    seed=int(seed), version=version)
    for obj in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square):
        for attr, value in (("n_iter", n_iter), ("n_restarts", n_restarts), ("n_queries", n_queries),
                            ("n_target_classes", n_target_classes)):
            if value is not None and hasattr(obj, attr):
                setattr(obj, attr, int(value))
    aa.wsol_fab_restarts = aa.fab.n_restarts  # FAB-T sets the shared FAB object to 1 restart; FAB gets these back
    return aa


def _version(ladder: Union[str, Sequence[str]], names: Sequence[str]) -> str:
    """pyautoattack's version for a ladder: ``standard`` or ``plus`` by name or by their exact attack list (a job keeps a
    ladder as its names, and ``standard``'s APGD-CE runs 1 restart where the ``custom`` version's runs 5), else ``custom``."""
    given = _ladder_name(ladder)
    if given in VERSIONS:
        return given
    return next((v for v in VERSIONS if tuple(names) == LADDERS[v]), "custom")


def attack_budgets(ladder: Union[str, Sequence[str]], num_classes: Optional[int], *, norm: str = "linf", n_iter: Optional[int] = None,
                   n_restarts: Optional[int] = None, n_queries: Optional[int] = None) -> Dict[str, str]:
    """Per attack of ``ladder``, the budget it runs with on a model of ``num_classes`` classes (iterations, restarts,
    target classes, queries), read from the set-up :func:`run_ladder` gives the attacks, so a report can say what each
    rung was. ``num_classes`` None: without the target classes, which follow from the dataset."""
    aa = build_autoattack(nn.Identity(), ladder, eps=0.0, norm=norm, seed=0, device="cpu", n_iter=n_iter, n_restarts=n_restarts,
                          n_queries=n_queries)
    names = resolve_ladder(ladder)
    if num_classes is not None:
        _fit_to_classes(aa, names, num_classes)

    budgets = {}
    for name in names:
        obj = _set_up(aa, name)
        steps = counted(obj.n_queries, "query", "queries") if name == "square" else counted(obj.n_iter, "iteration")
        parts = [steps, counted(obj.n_restarts, "restart")]
        if name in TARGETED and num_classes is not None:
            parts.append(counted(obj.n_target_classes, "target class", "target classes"))
        budgets[name] = ", ".join(parts)
    return budgets


def _set_up(aa: Any, name: str) -> Any:
    """The attack object of ``aa`` that runs attack ``name``, set up for it as ``run_standard_evaluation`` sets it up
    (APGD's loss, FAB's targeting, and FAB-T's single restart, FAB getting its own restarts back)."""
    if name in ("apgd-ce", "apgd-dlr"):
        aa.apgd.loss = name.split("-")[1]
        return aa.apgd
    if name == "apgd-t":
        return aa.apgd_targeted
    if name in ("fab", "fab-t"):
        aa.fab.targeted = name == "fab-t"
        aa.fab.n_restarts = 1 if name == "fab-t" else getattr(aa, "wsol_fab_restarts", aa.fab.n_restarts)
        return aa.fab
    return aa.square


def _perturb(aa: Any, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One attack on one batch, set up as ``run_standard_evaluation`` sets it up."""
    attack = _set_up(aa, name)
    attack.seed = aa.get_seed()
    return attack.perturb(x, y)


def unused_overrides(attacks: Sequence[str], overrides: Dict[str, Any]) -> List[str]:
    """The given overrides (``n_iter``, ``n_restarts``, ``n_queries``) that none of ``attacks`` uses: they change nothing."""
    return [k for k, v in overrides.items() if v is not None and not set(OVERRIDE_USERS[k]) & set(attacks)]


def untouched_by_overrides(attacks: Sequence[str], overrides: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """(override, attack, why) for each attack of ``attacks`` that a given override used by another of them leaves
    unchanged (:data:`OVERRIDE_EXCEPTIONS`), unless the option that governs that attack is given too."""
    given = {k for k, v in overrides.items() if v is not None}
    return [(k, a, why) for (k, a), (governs, why) in OVERRIDE_EXCEPTIONS.items()
            if k in given and a in attacks and governs not in given and set(OVERRIDE_USERS[k]) & set(attacks)]


def check_perturbation(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> None:
    """Raise if ``x_adv`` leaves [0, 1] or the ε-ball around ``x`` (an attack bug, never a user error)."""
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm.lower() == "linf" else delta.norm(dim=1)
    if bool((size > eps + _BALL_TOL * max(1.0, eps)).any()):
        raise RuntimeError(f"adversarial example outside the {norm} ball of radius {eps}: {size.max().item():.6g}")
    if bool((x_adv < -_BALL_TOL).any() or (x_adv > 1 + _BALL_TOL).any()):
        raise RuntimeError("adversarial example outside [0, 1]")


@dataclass
class Rung:
    """One attack of the ladder: robust accuracy after it, its delta, minutes, points attacked/broken."""

    attack: str
    robust_accuracy: float
    delta: float
    minutes: float
    attacked: int
    broken: int


@dataclass
class LadderResult:
    """Outcome of :func:`run_ladder` on N samples.

    ``broken_by`` is the ladder index of the attack that broke each sample (−1: none did, or it was
    misclassified clean). ``adv_pred`` is the model's prediction on ``x_adv`` (the clean prediction
    where nothing broke it); ``x_adv`` is the clean image where nothing broke it.
    """

    attacks: Tuple[str, ...]
    labels: torch.Tensor
    clean_correct: torch.Tensor
    broken_by: torch.Tensor
    adv_pred: torch.Tensor
    x_adv: torch.Tensor
    clean_accuracy: float
    rungs: List[Rung] = field(default_factory=list)

    @property
    def robust(self) -> torch.Tensor:
        """Bool N: clean-correct and no attack broke it."""
        return self.clean_correct & (self.broken_by < 0)

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.double().mean()) if self.robust.numel() else float("nan")

    def sample_rows(self, ids: Optional[Sequence[Any]] = None) -> List[Dict[str, Any]]:
        """One dict a sample: id, label, clean_correct, broken_by (attack name or None), adv_pred, robust."""
        ids = list(range(len(self.labels))) if ids is None else list(ids)
        return [
            {
                "id": ids[i],
                "label": int(self.labels[i]),
                "clean_correct": bool(self.clean_correct[i]),
                "broken_by": self.attacks[int(self.broken_by[i])] if int(self.broken_by[i]) >= 0 else None,
                "adv_pred": int(self.adv_pred[i]),
                "robust": bool(self.robust[i]),
            }
            for i in range(len(ids))
        ]


def check_num_classes(attacks: Sequence[str], num_classes: int) -> None:
    """Refuse attacks a model with ``num_classes`` classes is too small for (a ConfigError naming them)."""
    short = [a for a in attacks if num_classes < MIN_CLASSES.get(a, 2)]
    if short:
        keep = [a for a in attacks if a not in short] or ["apgd-ce"]
        raise ConfigError(
            f"{', '.join(f'{a} needs at least {MIN_CLASSES[a]} classes' for a in short)} and the model has {num_classes}: "
            f"list only attacks it can take, e.g. {','.join(keep)}"
        )


def _fit_to_classes(aa: Any, names: Sequence[str], num_classes: int) -> None:
    """Check the attacks against the classes; the targeted attacks go through at most the ``num_classes − 1``
    other classes (AutoAttack's 9 targets assume 10 or more classes)."""
    check_num_classes(names, num_classes)
    for obj in (aa.apgd_targeted, aa.fab):
        if obj.n_target_classes > num_classes - 1:
            obj.n_target_classes = num_classes - 1


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ladder(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    ladder: Union[str, Sequence[str]] = "standard",
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 250,
    device: Union[torch.device, str, None] = None,
    on_step: Optional[Callable[[int, int], None]] = None,
    **overrides: Optional[int],
) -> LadderResult:
    """Run an AutoAttack ladder on ``x`` (N×C×H×W in [0, 1]) with labels ``y``.

    Each attack runs only on the points still robust; a point broken by one attack is never
    attacked again. ``on_step(rung, points)`` is called as each attack starts on the points still robust (a job
    reports progress with it). ``device`` defaults to ``x``'s; ``overrides`` (n_iter, n_restarts, n_queries,
    n_target_classes) go to :func:`build_autoattack`. The model should be in eval mode.
    """
    device = torch.device(device) if device is not None else x.device
    names = resolve_ladder(ladder)
    x = x.detach().float().to(device)
    y = y.detach().long().to(device)
    n = len(y)
    aa = build_autoattack(model, ladder, eps=eps, norm=norm, seed=seed, device=device, **overrides)
    clean_pred = _predict(model, x, batch_size)
    if n:
        with torch.no_grad():
            _fit_to_classes(aa, names, int(model(x[:1]).shape[1]))
    clean_correct = clean_pred == y
    broken_by = torch.full((n,), -1, dtype=torch.long, device=device)
    adv_pred = clean_pred.clone()
    x_adv = x.clone()
    result = LadderResult(names, y, clean_correct, broken_by, adv_pred, x_adv,
                          float(clean_correct.double().mean()) if n else float("nan"))
    accuracy = result.clean_accuracy
    for rung, name in enumerate(names):
        idx = torch.nonzero(result.robust).flatten()
        if on_step is not None:
            on_step(rung, len(idx))
        _sync(device)
        start = time.perf_counter()
        broken = 0
        for b in range(0, len(idx), batch_size):
            sel = idx[b:b + batch_size]
            candidate = _perturb(aa, name, x[sel], y[sel]).detach().to(x)
            check_perturbation(candidate, x[sel], eps, norm)
            pred = _predict(model, candidate, batch_size)
            fooled = pred != y[sel]
            hit = sel[fooled]
            broken_by[hit] = rung
            adv_pred[hit] = pred[fooled]
            x_adv[hit] = candidate[fooled]
            broken += int(fooled.sum())
        _sync(device)
        new_accuracy = result.robust_accuracy
        result.rungs.append(Rung(name, new_accuracy, new_accuracy - accuracy,
                                 (time.perf_counter() - start) / 60.0, len(idx), broken))
        accuracy = new_accuracy
    return result


def ladder_attack(
    model: nn.Module,
    ladder: Union[str, Sequence[str]] = "standard",
    *,
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 250,
    **overrides: Optional[int],
):
    """An ``attack(x, y, eps) -> x_adv`` callable running the ladder (for :func:`wsol.attacks.pgd_eval.epsilon_sweep`)."""

    def attack(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return run_ladder(model, x, y, eps=eps, ladder=ladder, norm=norm, seed=seed,
                          batch_size=batch_size, **overrides).x_adv

    return attack


__all__ = [
    "ATTACKS", "LADDERS", "LadderResult", "Rung", "attack_budgets", "build_autoattack", "check_num_classes", "check_perturbation",
    "ladder_attack", "resolve_ladder", "run_ladder", "untouched_by_overrides", "unused_overrides",
]
