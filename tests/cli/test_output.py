"""cli.output: the warning printed before timing on a busy machine."""

from __future__ import annotations

import perfpredict.measure as measure
from cli.main import main
from cli.output import warn_if_busy


def test_warn_if_busy_prints_one_line_only_when_the_machine_is_busy(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(measure, "contention_note", lambda threads: asked.append(threads) or "2 CPUs busy")
    warn_if_busy([1, 2])  # a campaign's thread counts: the most of them
    assert capsys.readouterr().err == "perfpredict: warning: 2 CPUs busy\n" and asked == [2]
    monkeypatch.setattr(measure, "contention_note", lambda threads: None)
    warn_if_busy(1)
    assert capsys.readouterr().err == ""


def test_measure_warns_before_timing_on_a_busy_machine(monkeypatch, capsys):
    monkeypatch.setattr(measure, "contention_note", lambda threads: f"busy, timing at {threads}")
    assert main(["measure", "squeezenet1_1", "--resolution", "64", "--threads", "1", "--no-memory",
                 "--time-cap-s", "0.05", "--json"]) == 0
    out = capsys.readouterr()
    assert "perfpredict: warning: busy, timing at 1" in out.err and out.out.lstrip().startswith("{")
