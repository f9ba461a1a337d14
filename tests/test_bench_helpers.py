"""The benchmark scripts' shared helpers in bayesmeta.bench: report_head and time_chunks."""

from __future__ import annotations

import sys
import time

import pytest

from bayesmeta import bench


def test_report_head_names_the_script_its_arguments_commit_and_date(tmp_path):
    script = tmp_path / "my_bench.py"
    head = bench.report_head("my_bench", script, ["--steps", "3"])
    assert list(head) == ["benchmark", "commit", "command", "date"]
    assert head["benchmark"] == "my_bench"
    assert head["command"] == "benchmarks/my_bench.py --steps 3"
    assert head["commit"] == bench.git_commit(tmp_path)  # None: tmp_path is no checkout
    assert head["date"] == time.strftime("%Y-%m-%d")


def test_report_head_defaults_to_this_process_arguments_and_takes_a_program(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x.py", "--a", "1"])
    assert bench.report_head("s", "benchmarks/s.py")["command"] == "benchmarks/s.py --a 1"
    head = bench.report_head("s", "benchmarks/s.py", [], program="s.py")
    assert head["command"] == "s.py"


def test_time_chunks_times_the_first_call_and_the_best_of_the_rest():
    calls = []

    def run(state, key):
        calls.append((state, key))
        time.sleep(0.02 if not calls[:-1] else 0.0)
        return state + 1, key, "infos"

    first, best = bench.time_chunks(run, (0, "k"), 3)
    assert calls == [(0, "k"), (1, "k"), (2, "k"), (3, "k")]  # each call goes on from the last
    assert first >= 0.02 > best
    assert best == pytest.approx(0.0, abs=0.02)
