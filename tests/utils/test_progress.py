"""Progress: one plain line per stage when stderr is not a terminal; WSOL_PROGRESS switches it."""
from __future__ import annotations

import io
import sys

from wsol.utils.progress import progress, progress_mode


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_gets_one_line_per_stage(capsys, monkeypatch) -> None:
    monkeypatch.delenv("WSOL_PROGRESS", raising=False)
    assert progress_mode() == "lines"
    for epoch in (1, 2):
        assert list(progress(range(5), desc=f"epoch {epoch}")) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1: 5 it in ") and lines[1].startswith("epoch 2: 5 it in ")


def test_wsol_progress_0_silences(capsys, monkeypatch) -> None:
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    assert list(progress(range(3), desc="stage")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_disabled_bar_is_silent(capsys, monkeypatch) -> None:
    monkeypatch.delenv("WSOL_PROGRESS", raising=False)
    assert list(progress(range(3), desc="stage", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_terminal_and_wsol_progress_1_get_the_live_bar(monkeypatch) -> None:
    monkeypatch.delenv("WSOL_PROGRESS", raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert progress_mode() == "bar"
    assert list(progress(range(3), desc="stage")) == [0, 1, 2]
    assert "\r" in terminal.getvalue() and "stage" in terminal.getvalue()
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setenv("WSOL_PROGRESS", "1")
    assert progress_mode() == "bar"
    list(progress(range(3), desc="stage"))
    assert "\r" in log.getvalue()


def test_step_lines_say_what_starts_and_how_long_the_last_step_took(capsys, monkeypatch) -> None:
    from wsol.utils.progress import step_reporter

    monkeypatch.delenv("WSOL_PROGRESS", raising=False)
    step = step_reporter("sweep chunk 1/2")
    step("ε 1/255 on 4 points")
    step("ε 2/255 on 3 points")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "sweep chunk 1/2: ε 1/255 on 4 points"
    assert lines[1].startswith("sweep chunk 1/2: ε 2/255 on 3 points (last step ") and lines[1].endswith("s)")
    monkeypatch.setenv("WSOL_PROGRESS", "0")
    step_reporter("quiet")("ε 1/255")
    step_reporter("disabled", enabled=False)("ε 1/255")
    assert capsys.readouterr().err == ""


def test_step_lines_go_above_the_live_bar_on_a_terminal(monkeypatch) -> None:
    from wsol.utils.progress import step_reporter

    monkeypatch.delenv("WSOL_PROGRESS", raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    step_reporter("ladder chunk 1/1")("apgd-ce on 4 points")
    assert "ladder chunk 1/1: apgd-ce on 4 points\n" in terminal.getvalue()
