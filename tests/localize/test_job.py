"""The localize → evaluate → visualize jobs end to end on a tiny synthetic set, single and sharded."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from wsol.cli import run
from wsol.config import LocalizeConfig
from wsol.export.coco import meta_path
from wsol.jobs.localize import partial_folder, run_localize


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shapes_run) -> dict:
    return shapes_run(tmp_path_factory.mktemp("job"), n_test=12, num_classes=3, seed=3)


def _localize(tiny: dict, out: Path, *extra: str) -> int:
    return run(["localize", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(out), *extra])


def test_localize_writes_coco_results_that_pycocotools_loads(tiny, capsys) -> None:
    from pycocotools.coco import COCO

    out = tiny["base"] / "preds.json"
    assert _localize(tiny, out, "--masks", "--threshold", "0.3") == 0
    results = json.loads(out.read_text())
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert len(results) == 12 and meta["threshold"] == pytest.approx(0.3)
    assert meta["attribution"] == "grad" and meta["checkpoint"] == str(tiny["checkpoint"])
    for r in results:
        x, y, w, h = r["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 32 and y + h <= 32
        assert r["segmentation"]["size"] == [32, 32]
    gt = COCO()
    gt.dataset = {"info": {}, "images": [{"id": r["image_id"], "height": 32, "width": 32} for r in results], "categories": [{"id": i} for i in (1, 2, 3)], "annotations": []}
    gt.createIndex()
    assert len(gt.loadRes(str(out)).getAnnIds()) == 12


def test_evaluate_prints_table_and_saves_metrics(tiny, capsys) -> None:
    out = tiny["base"] / "eval.json"
    assert _localize(tiny, out, "--masks", "--sweep", "--attribution", "cam") == 0
    localized = capsys.readouterr().out.strip()
    assert run(["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(tiny["root"])]) == 0
    table = capsys.readouterr().out
    assert "; maxboxacc_v2 " in localized and all(part.endswith(" %") for part in localized.split("); ", 1)[1].split(", "))  # it gave no unit
    for name in ("top1_acc", "gt_known_loc", "top1_loc", "top1_seg", "maxboxacc_v2", "pxap", "coco_bbox_ap"):
        assert f"| {name} |" in table
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:] if line.startswith("|")}
    assert table.splitlines()[0] == "| metric | value | unit | over (images) | 95% CI (Wilson, over those images) |"  # the unit of every number is stated
    assert lines["images"][1] == "images" and lines["top1_acc"][1] == "%" and lines["best_gt_known_threshold"][1] == "fraction of map max"
    assert lines["top1_acc"][3].startswith("[") and lines["pxap"][3] == ""
    assert lines["top1_acc"][2] == "all 12" and lines["pxap"][2] == "12 of 12 with a mask" and lines["best_gt_known_threshold"][2] == ""
    assert "(12 images, 12 with a box, 12 with a mask, threshold " in localized
    assert _localize(tiny, out, "--masks", "--sweep", "--attribution", "cam") == 0
    again = capsys.readouterr().out.strip()
    assert f"wrote {out} (12 images, " in again and ", replacing the earlier file); " in again and ") (" not in again  # one bracket
    assert table.rstrip().endswith(f"wrote {out.with_suffix('.metrics.json')}")  # 'wrote', as every command says, not 'saved'
    assert run(["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(tiny["root"])]) == 0
    assert capsys.readouterr().out.rstrip().endswith("metrics.json (replacing the earlier file)")
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert 0.0 <= metrics["top1_loc"] <= metrics["gt_known_loc"] <= 100.0
    assert metrics["images_with_box"] == metrics["images_with_mask"] == 12 and set(metrics["over"].values()) == {12}  # every image is annotated
    assert metrics["top1_seg"] <= metrics["top1_acc"]
    from wsol.metrics.intervals import wilson_interval

    for name in ("top1_acc", "gt_known_loc", "top1_loc", "top1_seg"):
        hits = round(metrics[name] * metrics["images"] / 100)
        assert metrics["intervals"][name] == pytest.approx([100 * b for b in wilson_interval(hits, metrics["images"])])
        assert metrics["intervals"][name][0] <= metrics[name] <= metrics["intervals"][name][1]
        assert "| {} | {:.2f} | % | {} | [{:.2f}, {:.2f}] |".format(name, metrics[name], lines[name][2], *metrics["intervals"][name]) in table


def test_sweep_threshold_is_the_best_gt_known(tiny) -> None:
    out = tiny["base"] / "sweep.json"
    assert _localize(tiny, out, "--sweep", "--interval", "0.05") == 0
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["threshold"] == pytest.approx(meta["map_metrics"]["best_gt_known_threshold"])
    assert meta["input_resolution_metrics"]["gt_known_loc"] == pytest.approx(meta["map_metrics"]["best_gt_known_loc"])


def test_wrong_dataset_and_unknown_ids_are_one_line_errors(tiny, capsys, tmp_path) -> None:
    out = tiny["base"] / "p.json"
    assert _localize(tiny, out) == 0
    capsys.readouterr()
    assert run(["evaluate", "--pred", str(out), "--dataset", "cub", "--root", str(tiny["root"])]) == 2
    assert "made for dataset 'shapes'" in capsys.readouterr().err
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps([{"image_id": 999999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    assert run(["evaluate", "--pred", str(bogus), "--dataset", "shapes", "--root", str(tiny["root"])]) == 2
    err = capsys.readouterr().err
    assert "999999" in err and err.strip().count("\n") == 0


def test_bad_threshold_and_missing_checkpoint(tiny, capsys) -> None:
    assert _localize(tiny, tiny["base"] / "x.json", "--threshold", "1.5") == 2
    assert "threshold" in capsys.readouterr().err
    assert run(["localize", "--checkpoint", "nope.safetensors", "--dataset", "shapes", "--root", str(tiny["root"]), "--out", "x.json"]) == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_visualize_writes_png(tiny) -> None:
    out = tiny["base"] / "grid.png"
    assert run(["visualize", "--checkpoint", str(tiny["checkpoint"]), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(out), "--n", "4"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SHARDED = LocalizeConfig(masks=True, batch_size=4)  # what `--masks --batch-size 4` gives: 12 images, 3 batches


def _sharded_worker(rank: int, world: int, port: int, tiny: dict, out: str, resumed: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), WSOL_PROGRESS="0")
    torch.set_num_threads(1)
    code = _localize(tiny, Path(out), "--masks", "--batch-size", "4")
    from wsol.jobs.localize import run_localize
    from wsol.utils.distributed import cleanup

    def log(k: int) -> None:
        with open(f"{resumed}.rank{rank}.log", "a") as f:
            f.write(f"{k}\n")

    run_localize(tiny["checkpoint"], "shapes", tiny["root"], Path(resumed), SHARDED, show_progress=False, after_batch=log)
    cleanup()
    assert code == 0


def _slow_reader_worker(rank: int, world: int, port: int, tiny: dict, out: str) -> None:
    """Rank 1 reads the batch files slowly, so rank 0 is done with them (and with the results) long before it."""
    import time

    import wsol.jobs.localize as job

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), WSOL_PROGRESS="0")
    torch.set_num_threads(1)
    if rank == 1:
        read = job._read_batch
        job._read_batch = lambda path, with_predictions: (time.sleep(0.5), read(path, with_predictions))[1]
    code = _localize(tiny, Path(out), "--masks", "--batch-size", "4")
    from wsol.utils.distributed import cleanup

    cleanup()
    assert code == 0


def test_a_rank_reading_the_batches_slowly_still_finds_them(tiny, free_port) -> None:
    """Every rank reads every batch file (the map metrics); rank 0 removed the folder once it had written the results, so a
    rank still reading met FileNotFoundError (seen once in a fresh-clone test run). It removes them after every rank has read."""
    out = tiny["base"] / "slow.json"
    mp.start_processes(_slow_reader_worker, args=(2, free_port, tiny, str(out)), nprocs=2, start_method="spawn")
    assert out.is_file() and not partial_folder(out).exists()


class Stop(Exception):
    pass


def _stop(k: int) -> None:
    raise Stop


def test_two_process_sharded_localize_equals_single_process(tiny, free_port) -> None:
    single = tiny["base"] / "single.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same numbers to the last bit
    try:
        assert _localize(tiny, single, "--masks", "--batch-size", "4") == 0
        resumed = tiny["base"] / "resumed.json"  # stopped by one process after batch 0, resumed by two
        with pytest.raises(Stop):
            run_localize(tiny["checkpoint"], "shapes", tiny["root"], resumed, SHARDED, show_progress=False, after_batch=_stop)
    finally:
        torch.set_num_threads(threads)
    sharded = tiny["base"] / "sharded.json"
    mp.start_processes(_sharded_worker, args=(2, free_port, tiny, str(sharded), str(resumed)), nprocs=2, start_method="spawn")
    assert [Path(f"{resumed}.rank{r}.log").read_text() for r in (0, 1)] == ["1\n", "2\n"]  # the batches left, shared out
    for path in (sharded, resumed):
        assert path.read_bytes() == single.read_bytes() and meta_path(path).read_bytes() == meta_path(single).read_bytes()
    assert not partial_folder(resumed).exists()
    assert len(json.loads(single.read_text())) == 12 and "segmentation" in json.loads(single.read_text())[0]


def test_localize_and_evaluate_leave_no_lock_file_in_the_users_folder(tiny, tmp_path) -> None:
    out = tmp_path / "mine" / "preds.json"
    assert _localize(tiny, out) == 0
    assert run(["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(tiny["root"])]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.json", "preds.meta.json", "preds.metrics.json"]


def test_evaluate_reads_the_dataset_with_the_loader_options_localize_recorded(tiny, capsys) -> None:
    """`localize -o KEY=VALUE` records its loader options in the .meta.json; `evaluate` reads the dataset with them unless
    given its own -o (the ground truth of another option, e.g. another cifar10c severity, is another dataset)."""
    out = tiny["base"] / "opts.json"
    assert _localize(tiny, out, "-o", "native_size=32") == 0
    assert json.loads(out.with_suffix(".meta.json").read_text())["dataset_options"] == {"native_size": 32}
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    out.with_suffix(".meta.json").write_text(json.dumps({**meta, "dataset_options": {"bogus": 1}}))
    capsys.readouterr()
    evaluate = ["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(tiny["root"])]
    assert run(evaluate) == 2 and "has no option 'bogus'" in capsys.readouterr().err  # the recorded options were used
    assert run([*evaluate, "-o", "native_size=32"]) == 0  # given ones replace them


def test_the_recorded_checkpoint_is_absolute_whatever_the_working_folder(tiny, monkeypatch) -> None:
    """`--checkpoint nat/model.safetensors` was recorded as typed: from any other folder the record named no file."""
    monkeypatch.chdir(Path(tiny["checkpoint"]).parent)
    out = tiny["base"] / "relative.json"
    assert run(["localize", "--checkpoint", Path(tiny["checkpoint"]).name, "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(out)]) == 0
    assert json.loads(meta_path(out).read_text())["checkpoint"] == str(Path(tiny["checkpoint"]).resolve())


def test_evaluating_against_another_root_says_which_tree_the_maps_were_made_on(tiny, tmp_path, capsys) -> None:
    """Another tree with as many images (shapes of another --seed) was scored silently against the wrong ground truth."""
    import shutil

    out = tmp_path / "p.json"
    assert _localize(tiny, out) == 0
    other = Path(shutil.copytree(tiny["root"], tmp_path / "other"))
    capsys.readouterr()
    assert run(["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(other)]) == 0
    assert f"note: {out} was localized on the images under {Path(tiny['root']).resolve()}; scoring it against the ground truth under {other}" in capsys.readouterr().err
    assert run(["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(tiny["root"])]) == 0
    assert "note:" not in capsys.readouterr().err


def test_the_metrics_file_names_each_numbers_unit(tiny, tmp_path) -> None:
    """<pred>.metrics.json mixed percents (top1_acc 10.0), thresholds (fractions of the map maximum) and image counts
    with nothing to tell them apart; the printed table had a unit column, the file had none."""
    out = tmp_path / "p.json"
    assert _localize(tiny, out, "--sweep") == 0
    assert run(["evaluate", "--pred", str(out), "--dataset", "shapes", "--root", str(tiny["root"])]) == 0
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    units = metrics["units"]
    assert units["images"] == "images" and units["top1_acc"] == units["maxboxacc_v2"] == "%" and units["threshold"] == "fraction of map max"
    assert set(units) == {k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@pytest.mark.parametrize("command, out", [("localize", "p.json"), ("visualize", "g.png")])
def test_a_checkpoint_of_another_dataset_with_as_many_classes_is_refused(command, out, tiny, tmp_path, capsys) -> None:
    """A shapes model on svhn (10 classes each) drew maps of classes it never saw, silently; attack and robustness refused it."""
    import shutil

    other = tmp_path / "other.safetensors"
    shutil.copy(tiny["checkpoint"], other)
    meta = json.loads(Path(tiny["checkpoint"]).with_suffix(".json").read_text())
    meta.update(dataset="svhn", class_names=["digit0", "digit1", "digit2"])  # as many classes as the tiny shapes set
    other.with_suffix(".json").write_text(json.dumps(meta))
    argv = [command, "--checkpoint", str(other), "--dataset", "shapes", "--root", str(tiny["root"]), "--out", str(tmp_path / out)]
    assert run(argv) == 2
    assert "was trained on svhn with classes digit0" in capsys.readouterr().err
    assert not (tmp_path / out).exists()
