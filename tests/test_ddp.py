"""torchrun + DistributedDataParallel smoke test: 2 CPU processes, gloo backend."""
from __future__ import annotations

import json
import subprocess
import sys

import torch


def test_two_process_gloo_training(demo_folder, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "oste_core.cli", "--debug", "train", str(demo_folder), "--out", str(run),
        "--iters", "3", "--batch", "4", "--crop", "64", "--device", "cpu",
        "--set", "train.workers=0", "--set", "train.log_every=1", "--set", "model.cam_scales=1.0",
        "--set", "model.crf_backend=torch", "--set", "model.crf_iters=2",
    ]
    env = {"OMP_NUM_THREADS": "1", **__import__("os").environ}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]  # rank 0 logs once per step
    state = torch.load(run / "model.pt", weights_only=False)
    assert state["iteration"] == 3
