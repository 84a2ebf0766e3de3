import sys

import pytest
import torch

import wsol.attacks.autoattack as aa_mod
from wsol.attacks.autoattack import LADDERS, resolve_ladder, run_ladder
from wsol.errors import ConfigError, WsolError

FAST = dict(n_iter=5, n_queries=30, n_restarts=1)
EPS = 8 / 255


def test_resolve_ladder_names_and_lists():
    assert resolve_ladder("study") == ("apgd-ce", "apgd-dlr", "fab")
    assert resolve_ladder("apgd-ce, square") == ("apgd-ce", "square")
    for bad in ("apgd-xx", "", "apgd-ce,apgd-ce", "apgd-ce,,fab", " , "):
        with pytest.raises(ConfigError):
            resolve_ladder(bad)
    with pytest.raises(ConfigError, match=r"^unknown attack 'apgd-dr' in 'apgd-ce,apgd-dr,fab': use one of standard"):
        resolve_ladder("apgd-ce,apgd-dr,fab")  # a typo in a list of three is named, not the whole list
    with pytest.raises(ConfigError, match=r"^unknown attack or ladder 'apgd-cee': .*; did you mean 'apgd-ce'\?$"):
        resolve_ladder("apgd-cee")  # one name may be either: --attack of per-class takes an attack, --ladder a ladder
    with pytest.raises(ConfigError, match=r"did you mean 'standard'\?$"):
        resolve_ladder("stdandard")


@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"])
def test_each_attack_stays_in_ball_and_breaks_for_real(tiny_cnn, tiny_batch, attack):
    x, y = tiny_batch
    r = run_ladder(tiny_cnn, x, y, eps=EPS, ladder=attack, seed=0, **FAST)
    assert (r.x_adv - x).abs().max() <= EPS + 1e-6
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    broken = r.broken_by >= 0
    assert broken.any() and not broken.all()  # the checks below see broken and unbroken points
    with torch.no_grad():
        pred = tiny_cnn(r.x_adv).argmax(1)
    assert torch.equal(pred[broken], r.adv_pred[broken])
    assert (pred[broken] != y[broken]).all()
    assert not (broken & ~r.clean_correct).any()
    assert r.robust_accuracy < r.clean_accuracy


@pytest.mark.parametrize("ladder", list(LADDERS))
def test_rungs_never_raise_accuracy_and_attack_only_robust_points(tiny_cnn, tiny_batch, ladder, monkeypatch):
    x, y = tiny_batch
    seen = []
    real = aa_mod._perturb

    def spy(aa, name, xb, yb):
        seen.append((name, xb.clone()))
        return real(aa, name, xb, yb)

    monkeypatch.setattr(aa_mod, "_perturb", spy)
    r = run_ladder(tiny_cnn, x, y, eps=EPS, ladder=ladder, seed=0, batch_size=5, **FAST)
    accs = [r.clean_accuracy] + [g.robust_accuracy for g in r.rungs]
    assert all(b <= a for a, b in zip(accs, accs[1:]))
    robust_before = r.clean_correct.clone()
    for k, rung in enumerate(r.rungs):
        batches = [xb for name, xb in seen if name == rung.attack]
        attacked = torch.cat(batches) if batches else x[:0]
        assert torch.equal(attacked, x[robust_before])
        assert rung.attacked == int(robust_before.sum())
        robust_before &= r.broken_by != k
        assert rung.broken == int((r.broken_by == k).sum())


def test_matches_plain_pyautoattack(tiny_cnn, tiny_batch):
    from pyautoattack import AutoAttack

    x, y = tiny_batch
    ours = run_ladder(tiny_cnn, x, y, eps=EPS, ladder="standard", seed=3, batch_size=8, **FAST)
    plain = AutoAttack(tiny_cnn, device="cpu", eps=EPS, norm="Linf", seed=3, version="standard")
    for obj in (plain.apgd, plain.apgd_targeted, plain.fab):
        obj.n_iter = FAST["n_iter"]
    plain.square.n_queries = FAST["n_queries"]
    x_adv, _ = plain.run_standard_evaluation(x, y, batch_size=8)
    with torch.no_grad():
        plain_robust = tiny_cnn(x_adv).argmax(1) == y
    assert torch.equal(ours.robust, plain_robust)


def test_fixed_seed_is_reproducible(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = run_ladder(tiny_cnn, x, y, eps=4 / 255, ladder="plus", seed=1, **FAST)
    b = run_ladder(tiny_cnn, x, y, eps=4 / 255, ladder="plus", seed=1, **FAST)
    assert a.sample_rows() == b.sample_rows()
    assert torch.equal(a.x_adv, b.x_adv)


def test_known_pattern_breaks_only_the_weak_class(known):
    model, x, y = known  # class 3 flips into class 5 from eps = 3/255 on; the rest hold to 0.3
    r = run_ladder(model, x, y, eps=4 / 255, ladder="standard", seed=0, **FAST)
    assert r.clean_correct.all()
    assert torch.equal(~r.robust, y == 3)
    assert (r.adv_pred[y == 3] == 5).all()
    rows = r.sample_rows(ids=[f"s{i}" for i in range(len(y))])
    assert {row["broken_by"] for row in rows if row["label"] == 3} == {"apgd-ce"}
    assert rows[0]["id"] == "s0" and rows[0]["robust"] is True


def test_too_few_classes_for_targeted_ladder_is_a_user_error():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x = torch.rand(4, 3, 2, 2)
    with pytest.raises(ConfigError):
        run_ladder(model, x, torch.zeros(4, dtype=torch.long), eps=EPS, ladder="standard", seed=0)


def _few_class_model(num_classes: int) -> torch.nn.Module:
    """Logit c is 10·pixel c of a 1×4×4 image: class c when pixel c is the brightest of the first ``num_classes``."""
    linear = torch.nn.Linear(16, num_classes, bias=False)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:, :num_classes] = 10 * torch.eye(num_classes)
    return torch.nn.Sequential(torch.nn.Flatten(), linear).eval()


def _few_class_data(num_classes: int, gap: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images a class, each ``gap`` away from the next class: an ε of 8/255 breaks every one."""
    y = torch.arange(num_classes).repeat(2)
    x = torch.full((len(y), 16), 0.3)
    x[torch.arange(len(y)), y] = 0.5 + gap
    x[torch.arange(len(y)), (y + 1) % num_classes] = 0.5
    return x.view(-1, 1, 4, 4), y


@pytest.mark.parametrize("num_classes,ladder", [(4, "standard"), (4, "plus"), (3, "fab-t"), (2, "fab-t"), (3, "apgd-dlr")])
def test_ladders_fit_datasets_with_fewer_than_ten_classes(num_classes, ladder, monkeypatch):
    targets = []
    perturb = aa_mod._perturb

    def spy(aa, name, xb, yb):
        targets.append((aa.apgd_targeted.n_target_classes, aa.fab.n_target_classes))
        return perturb(aa, name, xb, yb)

    monkeypatch.setattr(aa_mod, "_perturb", spy)
    x, y = _few_class_data(num_classes)
    r = run_ladder(_few_class_model(num_classes), x, y, eps=EPS, ladder=ladder, seed=0, **FAST)
    assert r.clean_correct.all() and not r.robust.any()
    assert targets and set(targets) == {(num_classes - 1, num_classes - 1)}


@pytest.mark.parametrize("num_classes,ladder,needs", [(2, "study", "apgd-dlr needs at least 3"), (3, "standard", "apgd-t needs at least 4")])
def test_attacks_the_model_has_too_few_classes_for_are_named(num_classes, ladder, needs):
    x, y = _few_class_data(num_classes)
    with pytest.raises(ConfigError, match=needs):
        run_ladder(_few_class_model(num_classes), x, y, eps=EPS, ladder=ladder, seed=0, **FAST)


def test_ladder_names_ignore_case_and_spaces():
    assert resolve_ladder(" Standard") == LADDERS["standard"]
    assert resolve_ladder("APGD-CE, fab,") == ("apgd-ce", "fab")


def test_fab_after_fab_t_keeps_its_own_restarts(tiny_cnn, tiny_batch, monkeypatch):
    """pyautoattack's FAB-T leaves the shared FAB object at 1 restart; a FAB later in the ladder gets its own back."""
    x, y = tiny_batch
    built = {}
    real_build = aa_mod.build_autoattack

    def build(*args, **kwargs):
        built["aa"] = aa = real_build(*args, **kwargs)
        calls = built.setdefault("calls", [])
        monkeypatch.setattr(aa.fab, "perturb", lambda xb, yb: calls.append((aa.fab.targeted, aa.fab.n_restarts)) or xb)
        return aa

    monkeypatch.setattr(aa_mod, "build_autoattack", build)
    run_ladder(tiny_cnn, x, y, eps=8 / 255, ladder="fab-t,fab", n_restarts=3, n_iter=2)
    assert built["calls"] and {c for c in built["calls"] if c[0]} == {(True, 1)}
    assert {c for c in built["calls"] if not c[0]} == {(False, 3)}


def test_missing_pyautoattack_is_one_line(tiny_cnn, tiny_batch, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # `import pyautoattack` now raises ImportError
    x, y = tiny_batch
    with pytest.raises(WsolError, match="pip install pyautoattack") as info:
        run_ladder(tiny_cnn, x, y, eps=8 / 255, ladder="apgd-ce")
    assert "\n" not in str(info.value)


def test_a_ladder_kept_as_its_attack_names_keeps_its_version() -> None:
    """A job stores --ladder standard as its four names; it must still run AutoAttack's standard settings (APGD-CE with
    one restart), not the custom version's five."""
    from wsol.attacks.autoattack import build_autoattack

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    for ladder, version, restarts in (("standard", "standard", 1), (list(resolve_ladder("standard")), "standard", 1),
                                      (list(resolve_ladder("plus")), "plus", 5), ("study", "custom", 5), (["apgd-ce"], "custom", 5)):
        aa = build_autoattack(model, ladder, eps=8 / 255, norm="linf", seed=0, device="cpu")
        assert (aa.version, aa.apgd.n_restarts) == (version, restarts), ladder


def test_attack_budgets_say_what_each_rung_runs() -> None:
    from wsol.attacks.autoattack import attack_budgets

    assert attack_budgets("standard", 10) == {"apgd-ce": "100 iterations, 1 restart", "apgd-t": "100 iterations, 1 restart, 9 target classes",
                                              "fab-t": "100 iterations, 1 restart, 9 target classes", "square": "5000 queries, 1 restart"}
    assert attack_budgets("study", 10, n_iter=20)["fab"] == "20 iterations, 5 restarts"
    assert attack_budgets(["apgd-t"], 5)["apgd-t"] == "100 iterations, 1 restart, 4 target classes"  # at most the other classes
