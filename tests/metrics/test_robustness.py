import itertools
import math

import pytest
import torch

from wsol.export.tables import markdown_table, matrix_rows
from wsol.metrics.robustness import (
    across_models_rows, attack_confusion, class_spread, ladder_rows, linear_linf_robust, paired_accuracy_difference, per_class_accuracy, step_deltas,
    summary_rows, sweep_rows, sweep_total_row, tied_with_worst, total_drop, with_total_row, worst_class,
)
from wsol.report.robustness_figures import plot_class_accuracy_vs_eps, plot_drop_heatmap

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
# robust flags at three ε: class 0 loses one point at ε1, class 2 loses two at ε2; class 3 is empty
ROBUST = torch.tensor([
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 0, 1, 1, 1, 1, 1, 1],
    [1, 0, 1, 1, 1, 0, 0, 1],
], dtype=torch.bool)


def test_per_class_accuracy_steps_and_drops():
    acc = per_class_accuracy(ROBUST, LABELS, 4)
    assert acc.shape == (3, 4) and torch.isnan(acc[:, 3]).all()
    assert torch.allclose(acc[:, :3], torch.tensor([[1.0, 1.0, 1.0], [0.5, 1.0, 1.0], [0.5, 1.0, 0.5]], dtype=torch.float64))
    assert torch.allclose(per_class_accuracy(ROBUST[2], LABELS, 4)[:3], acc[2, :3])
    deltas = step_deltas(acc[:, :3])
    assert torch.allclose(deltas, torch.tensor([[0.0, 0, 0], [-0.5, 0, 0], [0, 0, -0.5]], dtype=torch.float64))
    assert torch.allclose(total_drop(acc[:, :3]), torch.tensor([-0.5, 0.0, -0.5], dtype=torch.float64))
    index, value = worst_class(acc)
    assert index.tolist() == [0, 0, 0] and value.tolist() == [1.0, 0.5, 0.5]
    spread = class_spread(acc)
    assert torch.allclose(spread["range"], torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))
    assert math.isclose(float(spread["std"][1]), float(torch.tensor([0.5, 1.0, 1.0]).std(unbiased=False)), rel_tol=1e-6)


def test_per_class_accuracy_is_the_ratio_of_counts_as_written():
    """7 of 10 is written as 0.7 (float32 would give 0.699999988079071 in every CSV)."""
    labels = torch.zeros(10, dtype=torch.long)
    correct = torch.arange(10) < 7
    assert float(per_class_accuracy(correct, labels, 1)[0]) == 0.7
    assert repr(float(per_class_accuracy(correct, labels, 1)[0])) == "0.7"


def test_confusion_under_attack():
    adv = torch.tensor([0, 2, 1, 1, 2, 0, 0, 2])
    conf = attack_confusion(LABELS, adv, 3)
    assert conf.sum() == 8 and conf[0, 2] == 1 and conf[2, 0] == 2 and conf[1, 1] == 2
    masked = attack_confusion(LABELS, adv, 3, mask=LABELS == 2)
    assert masked.sum() == 4 and masked[2].tolist() == [2, 0, 2]
    md = markdown_table(matrix_rows(conf, ["0", "1", "2"], ["0", "1", "2"], corner="true \\ adv"))
    assert md.splitlines()[0] == "| true \\ adv | 0 | 1 | 2 |"


def test_study_tables():
    acc = per_class_accuracy(ROBUST, LABELS, 3)
    overall = ROBUST.float().mean(1)
    rows = sweep_rows("m", [0, 1, 2], acc, overall)
    assert [r["eps"] for r in rows] == [0, 1, 2]  # one record per ε: the TOTAL row is a record of its own
    assert rows[0]["delta 0"] is None and rows[1]["delta 0"] == -0.5
    assert math.isclose(rows[2]["average delta"], -0.5 / 3, rel_tol=1e-6)
    total = sweep_total_row("m", acc, overall)
    assert list(total) == ["model", "delta 0", "delta 1", "delta 2", "average delta", "overall"]
    assert total["delta 2"] == -0.5 and math.isclose(total["overall"], -0.375, rel_tol=1e-6)
    shown = with_total_row(rows, total)
    assert [r["eps"] for r in shown] == [0, 1, 2, "TOTAL"] and shown[-1]["delta 2"] == -0.5
    assert markdown_table(shown).splitlines()[-1].startswith("| m | TOTAL |  | -0.50 |")
    other = acc.clone()
    other[-1, 1] = 0.0
    avg = across_models_rows({"a": acc, "b": other})
    assert [r["average"] for r in avg] == [-0.5, -0.5, -0.5]
    summary = summary_rows("m", [0, 1, 2], acc)
    assert summary[2]["worst class"] == 0 and summary[2]["worst-class accuracy"] == 0.5


def test_tied_with_worst_counts_the_other_classes_at_the_worst_accuracy_and_skips_absent_ones():
    nan = float("nan")
    acc = torch.tensor([[0.0, 0.5, 0.0, nan], [0.25, 0.5, 1.0, nan], [nan, 0.5, 0.5, nan]], dtype=torch.float64)
    assert tied_with_worst(acc).tolist() == [1, 0, 1]
    assert int(tied_with_worst(acc[0])) == 1


def test_ladder_rows_follow_the_rungs():
    from wsol.attacks.autoattack import Rung

    rungs = [Rung("apgd-ce", 0.7, -0.2, 1.5, 9, 2), Rung("fab", 0.7, 0.0, 3.0, 7, 0)]
    rows = ladder_rows("m", 0.9, rungs)
    assert [r["attack"] for r in rows] == ["initial accuracy", "apgd-ce", "fab"]
    assert rows[1]["delta"] == -0.2 and rows[2]["minutes"] == 3.0


def test_figures_are_written(tmp_path):
    acc = per_class_accuracy(ROBUST, LABELS, 3)
    a = plot_class_accuracy_vs_eps(acc, [0, 1, 2], tmp_path / "acc.png", class_names=["a", "b", "c"])
    b = plot_drop_heatmap(torch.stack([total_drop(acc), total_drop(acc)]), ["m1", "m2"], tmp_path / "drop.png")
    for p in (a, b):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ladder_and_summary_rows_carry_wilson_intervals() -> None:
    from types import SimpleNamespace

    from scipy.stats import binomtest

    from wsol.metrics.robustness import ladder_rows, summary_rows

    rows = ladder_rows("m", 0.8, [SimpleNamespace(attack="apgd-ce", minutes=0.1, robust_accuracy=0.3, delta=-0.5)], n=20)
    assert [r["n"] for r in rows] == [20, 20]
    low, high = binomtest(6, 20).proportion_ci(method="wilson")
    assert rows[1]["95% CI"] == pytest.approx((low, high), rel=1e-12)  # numbers, not text at 3 decimals
    acc = torch.tensor([[1.0, 0.5, 0.75], [0.5, 0.0, 0.25]])
    summary = summary_rows("m", [0, 8], acc, counts=torch.tensor([2, 2, 4]))
    assert [(r["worst class"], r["worst-class n"]) for r in summary] == [(1, 2), (1, 2)]
    low, high = binomtest(0, 2).proportion_ci(method="wilson")
    assert summary[1]["worst-class 95% CI"] == pytest.approx((low, high), rel=1e-12, abs=1e-15)


def test_paired_accuracy_difference_is_mcnemars_exact_test_on_the_discordant_pairs() -> None:
    from scipy.stats import binomtest

    before = torch.tensor([1, 1, 1, 0, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    after = torch.tensor([1, 0, 1, 1, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
    got = paired_accuracy_difference(before, after)
    assert (got["only_after"], got["only_before"], got["n"]) == (4, 2, 10)
    assert got["difference"] == pytest.approx(float(after.float().mean() - before.float().mean()))
    assert got["p"] == pytest.approx(binomtest(4, 6, 0.5).pvalue) and got["p"] == pytest.approx(0.6875)
    assert paired_accuracy_difference(before, before)["p"] is None  # no discordant pair: nothing to test
    with pytest.raises(ValueError, match="same samples"):
        paired_accuracy_difference(before, after[:5])


def test_linear_linf_robust_equals_the_brute_force_over_the_box_corners() -> None:
    """An affine logit difference is largest at a corner of the ε-ball ∩ [0, 1]^d, so trying all 2^d corners is the truth."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 5, generator=g, dtype=torch.float64)
    bias = -0.5 * weight.sum(1) + 0.1 * torch.randn(4, generator=g, dtype=torch.float64)  # boundaries through the box
    x = torch.rand(40, 5, generator=g, dtype=torch.float64)
    x[:5] = x[:5].round()  # pixels at the box's edges, where the room to move is less than ε
    y = (x @ weight.T + bias).argmax(1)
    y[:4] = (y[:4] + 1) % 4  # some misclassified points: never robust
    found = set()
    for eps in (0.0, 0.02, 0.05, 0.1, 0.3):
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        corners = torch.stack([torch.where(torch.tensor(c, dtype=torch.bool), hi, lo)
                               for c in itertools.product((0, 1), repeat=5)])  # 32 × N × 5
        brute = ((corners @ weight.T + bias).argmax(2) == y).all(0)
        exact = linear_linf_robust(weight, bias, x, y, eps)
        assert torch.equal(exact, brute)
        found.add(int(exact.sum()))
    assert len(found) > 2  # the ε grid spans robust and broken points


def test_linear_linf_robust_is_exact_at_ties_and_at_the_box() -> None:
    """Quarter-pixel images, integer weights and radii of quarters: the arithmetic is exact, so the logits tie often and
    the box often stops a pixel short of ε. A tie goes to the lower class index, as argmax gives it (the brute force)."""
    g = torch.Generator().manual_seed(3)
    weight, bias = torch.randint(-2, 3, (3, 4), generator=g).double(), torch.zeros(3, dtype=torch.float64)
    x = torch.randint(0, 5, (400, 4), generator=g).double() / 4
    y = torch.randint(0, 3, (400,), generator=g)
    corners = torch.tensor(list(itertools.product((0, 1), repeat=4)), dtype=torch.bool)[:, None]  # 16 × 1 × 4
    for eps in (0.0, 0.25, 0.5):
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        logits = torch.where(corners, hi, lo) @ weight.T + bias
        assert ((logits.max(2).values[..., None] == logits).sum(2) > 1).any()  # ties
        brute = (logits.argmax(2) == y).all(0)
        unboxed = ((torch.where(corners, x + eps, x - eps) @ weight.T + bias).argmax(2) == y).all(0)
        assert eps == 0 or (brute != unboxed).any()  # the box decides some points
        assert torch.equal(linear_linf_robust(weight, bias, x, y, eps), brute)
