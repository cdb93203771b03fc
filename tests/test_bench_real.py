"""benchmarks/bench_real.py end to end on a tiny generated folder: the table, the seeds and the annotator loop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from oste_core.data import write_demo_data

ROOT = Path(__file__).resolve().parents[1]


def test_bench_real_prints_the_table_and_the_annotator_loop(tmp_path):
    data = write_demo_data(tmp_path / "data", n=6, size=48, seed=0)
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_real.py"), str(data), "--seeds", "0", "1",
         "--variants", "default,baseline", "--loop", "--loop-n", "1", "--loop-rounds", "1", "--update-s", "1",
         "--set", "train.iters=3", "--set", "loss.seg_warmup_iters=2", "--set", "train.fast_max_side=48",
         "--set", "model.crf_backend=torch", "--set", "model.crf_iters=2",
         "--keep", str(tmp_path / "runs"), "--json", str(tmp_path / "out.json"),
         "--markdown", str(tmp_path / "table.md")],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("| variant"))
    for column in ("CAM", "pseudo", "coverage", "seg", "suggestion", "background", "train s"):
        assert f"| {column} |" in header
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| default", "| baseline"))]
    assert len(rows) == 2 and all("±" in row for row in rows)  # two seeds: mean ± spread
    assert "annotator loop" in result.stdout
    markdown = (tmp_path / "table.md").read_text()
    assert "python benchmarks/bench_real.py " in markdown and header in markdown and rows[0] in markdown
    saved = json.loads((tmp_path / "out.json").read_text())
    assert [r["seed"] for r in saved["results"]["default"]] == [0, 1]
    assert [row["verified"] for row in saved["loop"]] == [0, 1]
    assert 0.0 <= saved["loop"][-1]["suggestion_miou"] <= 1.0


def test_bench_real_without_keep_leaves_no_run_folders_behind(tmp_path):
    data = write_demo_data(tmp_path / "data", n=4, size=48, seed=0)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_real.py"), str(data), "--variants", "baseline",
         "--set", "train.iters=2", "--set", "loss.seg_warmup_iters=1", "--set", "train.fast_max_side=48",
         "--set", "model.crf_backend=torch", "--set", "model.crf_iters=2"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| baseline |" in result.stdout
    assert list(scratch.glob("bench_real_*")) == []  # the runs and their feature caches are deleted
