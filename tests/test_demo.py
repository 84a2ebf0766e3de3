"""`wsol demo` end to end at toy scale: report table, figures, COCO files; a re-run resumes."""
from __future__ import annotations

import json

from wsol.cli import run


def test_demo_writes_report_with_table_and_figures(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--epochs", "1", "--n-train", "40", "--n-test", "20"]
    assert run(args) == 0
    report = (out / "report.md").read_text()
    assert ("| method | attribution | top1_acc (%) | gt_known_loc (%) | top1_loc (%) | maxboxacc_v2 (%) | top1_seg (%) | pxap (%) "
            "| threshold (fraction of map max) |") in report
    assert "percent over the 20 test images (the threshold: a fraction of each map's maximum)" in report  # it read 'all in percent'
    assert "Accuracies and drops here are fractions of 1, not percent" in report.split("## Per-class robustness")[1]  # it said nothing
    for method in ("natural", "art"):
        for attribution in ("grad", "cam"):
            metrics = json.loads((out / method / f"preds_{attribution}.metrics.json").read_text())
            cells = " | ".join(f"{metrics[k]:.2f}" for k in ("top1_acc", "gt_known_loc", "top1_loc", "maxboxacc_v2", "top1_seg", "pxap", "threshold"))
            assert f"| {method} | {attribution} | {cells} |" in report  # the numbers `wsol evaluate` measured
            spans = " | ".join("[{:.1f}, {:.1f}]".format(*metrics["intervals"][k]) for k in ("top1_acc", "gt_known_loc", "top1_loc", "top1_seg"))
            assert f"| {method} | {attribution} | {spans} |" in report  # how sure each number is
            figure = out / "figures" / f"{method}_{attribution}.png"
            assert figure.read_bytes()[:4] == b"\x89PNG"
            assert f"(figures/{method}_{attribution}.png)" in report
            results = json.loads((out / method / f"preds_{attribution}.json").read_text())
            assert len(results) == 20 and all("segmentation" in r for r in results)
        assert (out / method / "metrics.jsonl").is_file() and (out / method / "config.yaml").is_file()
    assert "Paired, art minus natural on the " in report  # whether ART's IN and K differ from natural's, sample by sample
    kept = [out / "art" / "model.safetensors", out / "art" / "preds_grad.json", out / "figures" / "natural_cam.png"]
    stamps = [p.stat().st_mtime_ns for p in kept]
    assert run(args) == 0
    assert [p.stat().st_mtime_ns for p in kept] == stamps  # a rerun keeps the finished stages' outputs
    rerun = (out / "report.md").read_text()
    assert "- train art: done before, kept" in rerun and "- localize+evaluate natural/cam: done before, kept" in rerun
    assert rerun.split("## Time")[0] == report.split("## Time")[0]  # the same tables, read back from the kept files


def test_demo_folder_with_other_arguments_is_refused_in_one_line(tmp_path, capsys) -> None:
    from wsol.jobs.demo import claim_demo_folder
    from wsol.jobs.runfolder import DEMO_ARGUMENTS_FILE

    out = tmp_path / "demo"
    claim_demo_folder(out, {"seed": 0, "epochs": 12, "n_train": 40, "n_test": 20})
    claim_demo_folder(out, {"seed": 0, "epochs": 12, "n_train": 40, "n_test": 20})
    assert run(["demo", "--out", str(out), "--epochs", "1", "--n-train", "40", "--n-test", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs 12" in err and not (out / "shapes").exists()
    assert json.loads((out / DEMO_ARGUMENTS_FILE).read_text())["epochs"] == 12


def test_attack_and_robustness_runs_of_a_retrained_model_are_dropped(tmp_path) -> None:
    """A run folder holding a file older than its model (retrained since) would resume as finished with the old
    model's rows; a folder written after the model is kept."""
    import os

    from wsol.jobs.demo import drop_if_older

    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"w")
    stale, fresh = tmp_path / "attack" / "natural", tmp_path / "attack" / "art"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "samples.csv").write_text("x\n")
    made = checkpoint.stat().st_mtime_ns
    os.utime(stale / "samples.csv", ns=(made - 10**9, made - 10**9))
    os.utime(fresh / "samples.csv", ns=(made + 10**9, made + 10**9))
    drop_if_older(checkpoint, stale)
    drop_if_older(checkpoint, fresh)
    drop_if_older(checkpoint, tmp_path / "missing")
    assert not stale.exists() and (fresh / "samples.csv").is_file()


def test_art_is_trained_again_when_its_warm_start_model_is_newer(tmp_path, monkeypatch) -> None:
    """The ART stage fine-tunes the natural model: once the natural model is retrained (newer than the ART run), the
    ART model is stale and is trained again from the start; an ART run written after the natural model is kept."""
    import os

    import wsol.jobs.demo as demo

    calls = []

    def fake_train(config, out, resume=False, device=None):  # the training stage, without training
        calls.append((out.name, resume))
        out.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "train_state.pt"):
            (out / name).write_bytes(b"w")
        (out / "model.json").write_text(json.dumps({"epoch": config.epochs}))
        return {}

    monkeypatch.setattr(demo, "train", fake_train)
    root = tmp_path / "shapes"
    natural, _ = demo._train_model("natural", root, tmp_path / "natural", 1, 0, None)
    art, trained = demo._train_model("art", root, tmp_path / "art", 1, 0, None, init=natural)
    assert trained and demo._train_model("art", root, tmp_path / "art", 1, 0, None, init=natural) == (art, False)
    assert calls == [("natural", False), ("art", False)]
    earlier = natural.stat().st_mtime_ns - 10**9
    for path in art.parent.iterdir():  # the natural model retrained after the ART fine-tune
        os.utime(path, ns=(earlier, earlier))
    assert demo._train_model("art", root, tmp_path / "art", 1, 0, None, init=natural) == (art, True)
    assert calls[-1] == ("art", False)  # from the start: the old fine-tune's state is not resumed
    assert demo._train_model("art", root, tmp_path / "art", 1, 0, None, init=natural) == (art, False)


def test_the_demos_paired_line_names_a_metric_no_sample_has() -> None:
    from wsol.export.tables import UNDEFINED_INTERVAL, Interval
    from wsol.jobs import demo

    row = {"run": "art", "against": "natural", "n paired": "3 IN / 0 K", "ΔIN (points)": 1.5, "ΔIN 95% CI": Interval(0.5, 2.5),
           "ΔK (points)": float("nan"), "ΔK 95% CI": UNDEFINED_INTERVAL}
    assert demo._paired_part("K", row) == "K – (no sample has it)" and demo._paired_part("IN", row) == "IN +1.50 [0.50, 2.50]"
    assert demo._paired_part("IN", {**row, "ΔIN 95% CI": UNDEFINED_INTERVAL}) == "IN +1.50 (no interval)"


def test_every_number_of_the_demo_tables_is_labelled_with_its_unit() -> None:
    """The localization, interval and attack tables had bare headers (top1_acc, IN, threshold) with the unit in a sentence above."""
    from wsol.export.tables import Interval
    from wsol.jobs import demo

    metrics = {"top1_acc": 92.4, "gt_known_loc": 80.0, "top1_loc": 75.0, "maxboxacc_v2": 70.0, "top1_seg": 60.0, "pxap": 50.0, "threshold": 0.2}
    rows = [{"method": "natural", "attribution": "grad", **metrics, "intervals": {"top1_acc": [90.0, 94.0]}}]
    attack = [{"method": "natural", "attribution": "grad", "attacked": 30, "IN": 40.0, "IN 95% CI": Interval(35.0, 45.0), "K": 50.0, "K 95% CI": Interval(45.0, 55.0)}]
    text = demo._report_text(rows, [], {}, 1.0, 2000, 500, attack_rows=attack)
    headers = [line for line in text.splitlines() if line.startswith("| method |")]
    assert "| natural | grad | [90.0, 94.0] |  |  |  |" in text and "| natural | grad | 30 | 40.00 | [35.00, 45.00] | 50.00 | [45.00, 55.00] |" in text
    assert headers == [
        "| method | attribution | top1_acc (%) | gt_known_loc (%) | top1_loc (%) | maxboxacc_v2 (%) | top1_seg (%) | pxap (%) | threshold (fraction of map max) |",
        "| method | attribution | top1_acc (%) | gt_known_loc (%) | top1_loc (%) | top1_seg (%) |",
        "| method | attribution | attacked | IN (%) | IN 95% CI | K (%) | K 95% CI |",
    ]
