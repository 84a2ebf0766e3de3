"""The one start-over rule of the long jobs (runfolder.rewritten_since, runfolder.start_over): when a run's results
are another model's, and how they are dropped."""
from __future__ import annotations

from pathlib import Path

import pytest

import wsol.jobs.runfolder as runfolder
from wsol.jobs.runfolder import CHECKPOINT_DIGEST, rewritten_since, start_over


@pytest.mark.parametrize("old, new, rewritten", [
    ({CHECKPOINT_DIGEST: "a"}, {CHECKPOINT_DIGEST: "b"}, True),
    ({CHECKPOINT_DIGEST: "a"}, {CHECKPOINT_DIGEST: "a"}, False),
    ({}, {CHECKPOINT_DIGEST: "b"}, False),  # a record from before the digest was kept
    ({CHECKPOINT_DIGEST: "a"}, {}, False),  # weights deleted since: nothing to compare
    ({CHECKPOINT_DIGEST: None}, {CHECKPOINT_DIGEST: "b"}, False),
])
def test_rewritten_since_compares_digests_both_records_hold(old, new, rewritten) -> None:
    assert rewritten_since(old, new) is rewritten


def test_rewritten_since_reads_the_key_it_is_given() -> None:
    assert rewritten_since({"weights_sha256": ["a"]}, {"weights_sha256": ["b"]}, "weights_sha256")
    assert not rewritten_since({"weights_sha256": ["a"], CHECKPOINT_DIGEST: "x"}, {"weights_sha256": ["a"], CHECKPOINT_DIGEST: "y"},
                               "weights_sha256")


def _folder(tmp_path: Path) -> list:
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"png")
    (tmp_path / "rows.csv").write_text("x\n1\n")
    return [tmp_path / "summary.json", tmp_path / "figures", tmp_path / "missing.txt", tmp_path / "rows.csv"]


def test_start_over_notes_and_removes_files_and_folders(tmp_path, capsys) -> None:
    stale = _folder(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    start_over(tmp_path, "results", "model.pt", stale)
    assert capsys.readouterr().err == f"note: {tmp_path} holds results of an earlier version of model.pt (rewritten since): starting over\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_start_over_removes_in_the_order_given(tmp_path, monkeypatch) -> None:
    """A kill while a folder is removed leaves what comes after it: the results a rerun resumes from, given last, stay
    until everything that reads as the finished run is gone."""
    stale = _folder(tmp_path)

    def killed(path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runfolder, "remove_folder", killed)
    with pytest.raises(KeyboardInterrupt):
        start_over(tmp_path, "rows", "model.safetensors", stale)
    assert not (tmp_path / "summary.json").exists() and (tmp_path / "rows.csv").is_file()


def test_differences_text_says_what_each_differing_argument_was_and_is() -> None:
    from wsol.jobs.runfolder import config_differences, differences_text

    old = {"n": 500, "eps": 8 / 255, "ladder": ["apgd-ce", "apgd-t"], "dataset_options": {"severity": 2}, "weights": ["/a/" + "x" * 80 + "/old.pt"]}
    new = {"n": 64, "eps": 4 / 255, "ladder": ["fab"], "dataset_options": {"severity": 3, "corruption": "fog"}, "weights": ["/a/" + "x" * 80 + "/new.pt"]}
    text = differences_text(config_differences(old, new), old, new)
    assert text.split("; ") == [
        "dataset_options.corruption was none, now fog", "dataset_options.severity was 2, now 3", "eps was 0.0313725, now 0.0156863",
        "ladder was apgd-ce,apgd-t, now fab", "n was 500, now 64", f"weights was …{('x' * 80 + '/old.pt')[-59:]}, now …{('x' * 80 + '/new.pt')[-59:]}"]
