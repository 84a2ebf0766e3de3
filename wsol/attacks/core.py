"""The one sign-ascent core behind every ℓ∞ perturbation wsol makes.

PGD, ART's attack and the attributional attacks (IFIA) differ only in the objective they climb and
in which iterate they keep. :func:`sign_ascent` takes the objective as a callable, so the ε-ball
projection, the [0, 1] clamp, the random start and the per-sample "best accepted iterate" rule are
written here once.

Images are in [0, 1] and models normalize inside, so ``eps`` and ``step_size`` are pixel units.
Only input gradients are taken (``torch.autograd.grad``): parameter ``.grad`` fields are never
touched and the model's train/eval mode is left as the caller set it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from wsol.utils.seeding import draw

Objective = Callable[[torch.Tensor], torch.Tensor]
"""Maps the perturbed batch (N×C×H×W, requires grad) to per-sample losses (N) or their sum."""

Acceptance = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
"""Maps a detached iterate to (accepted: bool N, score: float N); higher score = better. It may take
gradients itself (an attribution map), so it is not run under ``torch.no_grad``."""


Generators = Union[torch.Generator, Sequence[torch.Generator], None]
"""One generator for a whole batch, one per sample (row i draws from generator i), or None (the global RNG)."""


def sample_generators(seed: int, keys: Sequence[int], stream: str = "") -> List[torch.Generator]:
    """One CPU generator per sample, seeded from (``seed``, ``stream``, the sample's key, e.g. its dataset
    index): a sample's draws then do not depend on its batch, the resume point or the number of ranks.
    ``stream`` separates independent uses (an attack's start and a PGD start) of the same samples."""
    def seeded(key: int) -> torch.Generator:
        digest = hashlib.blake2b(f"{int(seed)}:{stream}:{int(key)}".encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little"))

    return [seeded(k) for k in keys]


def uniform_noise(shape: torch.Size | tuple, generator: Generators = None, device: torch.device | str | None = None) -> torch.Tensor:
    """U[−1, 1] noise of ``shape`` drawn from ``generator`` (or the global RNG) and moved to ``device``."""
    return draw(shape, generator, device) * 2 - 1


def normal_noise(shape: torch.Size | tuple, generator: Generators = None, device: torch.device | str | None = None) -> torch.Tensor:
    """N(0, 1) noise of ``shape`` drawn like :func:`uniform_noise`."""
    return draw(shape, generator, device, normal=True)


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the ℓ∞ ball of radius ``eps`` around ``x`` and onto [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def random_delta(x: torch.Tensor, eps: float, generator: Generators = None, shard: Tuple[int, int] = (0, 1)) -> torch.Tensor:
    """ε·U[−1, 1] noise for the rows of ``x``: the one place a random start is drawn.

    With one generator per row (:func:`sample_generators`) each row is its own draw. With one
    generator, ``shard=(rank, world)`` says ``x`` is this rank's share of a global batch of
    ``world``·N rows (row i of the global batch is row i // world of rank i % world); the noise of
    the whole global batch is drawn and this rank's rows are returned, so each sample's start does
    not depend on how the batch is split across processes.
    """
    if isinstance(generator, Sequence):
        return eps * uniform_noise(x.shape, generator, x.device).to(x.dtype)
    rank, world = shard
    n = x.shape[0]
    noise = uniform_noise((n * world, *x.shape[1:]), generator, x.device)
    return eps * noise.view(n, world, *x.shape[1:])[:, rank].to(x.dtype)


def random_start_point(
    x: torch.Tensor, eps: float, generator: Generators = None, init_delta: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``x`` + U[−ε, ε] (or ``x + init_delta``), projected to the ε-ball and to [0, 1]."""
    delta = init_delta.to(x) if init_delta is not None else random_delta(x, eps, generator)
    return project_linf(x.detach() + delta, x.detach(), eps)


@dataclass
class AscentResult:
    """Outcome of :func:`sign_ascent`.

    ``x_adv``: the last iterate, or per sample the best accepted one when an acceptance test was
    given (the clean ``x`` where no iterate was accepted). ``best_step``: the step (1-based; 0 =
    the starting point) that ``x_adv`` comes from, −1 where none was accepted. ``best_score``: its
    score (−inf where none was accepted). The last two are None without an acceptance test.
    """

    x_adv: torch.Tensor
    best_step: Optional[torch.Tensor] = None
    best_score: Optional[torch.Tensor] = None

    @property
    def accepted(self) -> Optional[torch.Tensor]:
        """Bool N: whether some iterate passed the acceptance test."""
        return None if self.best_step is None else self.best_step >= 0


def sign_ascent(
    objective: Objective,
    x: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    *,
    maximize: bool = True,
    random_start: bool = False,
    generator: Generators = None,
    init_delta: Optional[torch.Tensor] = None,
    acceptance: Optional[Acceptance] = None,
    score_start: bool = False,
) -> AscentResult:
    """``steps`` iterations of x̃ ← Proj_{ε, [0,1]}(x̃ ± α·sign(∇ objective(x̃))).

    ``objective`` returns per-sample losses (or their sum; either way each sample's step is the
    sign of its own gradient). ``maximize=False`` descends. ``random_start`` starts at
    x + U[−ε, ε] drawn from ``generator`` (one, or one per sample; or at ``x + init_delta``). With ``acceptance`` every
    iterate after a step (and the start, if ``score_start``) is tested and each sample keeps its
    highest-scoring accepted iterate: IFIA's "most dissimilar step that keeps the label".
    """
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError("eps, step_size and steps must not be negative")
    x = x.detach()
    if random_start and eps > 0:
        x_adv = random_start_point(x, eps, generator, init_delta)
    else:
        x_adv = x.clone()
    sign = 1.0 if maximize else -1.0
    best = _BestIterate(x) if acceptance is not None else None
    if best is not None and score_start:
        best.offer(x_adv, acceptance, 0)
    for step in range(1, steps + 1):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = objective(x_adv)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv, allow_unused=True, materialize_grads=True)
        x_adv = project_linf(x_adv.detach() + sign * step_size * grad.sign(), x, eps)
        if best is not None:
            best.offer(x_adv, acceptance, step)
    if best is None:
        return AscentResult(x_adv.detach())
    return AscentResult(best.x, best.step, best.score)


class _BestIterate:
    """Per-sample best accepted iterate so far (starts at the clean input, step −1, score −inf)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.step = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        self.score = torch.full((x.shape[0],), float("-inf"), device=x.device)

    def offer(self, candidate: torch.Tensor, acceptance: Acceptance, step: int) -> None:
        accepted, score = acceptance(candidate.detach())
        better = accepted.bool() & (score.to(self.score) > self.score)
        if better.any():
            self.x[better] = candidate.detach()[better]
            self.score[better] = score.to(self.score)[better]
            self.step[better] = step
