"""Crash safety by killing: SIGKILL a real `oste train`, `oste update`, `oste export` and a GUI session's saves
(a verified mask and tags.csv, through `app.project.Project`) at random instants, then check what is left and
that the next run goes on (prints a Markdown table; tests/test_crash_safety.py runs a few kill points).

* train: ``oste train`` killed, then ``oste train --resume`` must finish (exit 0, a loadable model.pt) or say
  clearly that there is nothing to resume; no temp file or lock may remain.
* update: ``oste update`` of a trained run killed; model.pt must load after each kill; a last update must finish.
* export: ``oste export --overwrite`` (VOC, labelme, CVAT) killed; every file present must be complete (PNGs
  decode, JSON parses, the zip tests clean); a last export must finish and leave no temp file.
* save: a loop of verified-mask and tags.csv saves killed; the mask must be exactly the old or the new one,
  tags.csv exactly one of the two versions, and the folder must open again (stale lock, temp files removed).

    python benchmarks/bench_crash.py --kills 12 --seed 0
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--iters", "8", "--batch", "2", "--crop", "64", "--device", "cpu", "--set", "train.workers=0",
        "--set", "train.checkpoint_every=1", "--set", "model.cam_scales=1.0", "--set", "model.crf_backend=torch",
        "--set", "model.crf_iters=3", "--set", "train.fast_max_side=48"]
SCENARIOS = ("train", "update", "export", "save")
# kill points are drawn after the line each process prints once it starts writing: a third of the training kills
# after its first line instead (setup: nothing written yet, or only config.yaml)
MARKERS = {"train": "training: ", "setup": "", "update": "updating for", "export": "exporting ", "save": "ready"}


@dataclass
class Outcome:
    scenario: str
    delay_s: float  # after the process printed its marker line (see ``MARKERS``)
    killed: bool  # False: it had ended before the kill
    ok: bool
    recovered: str  # "resumed", "reported", "readable", "old", "new" ...
    temp_files_left: int  # by the kill, before the next run cleaned up
    detail: str = ""


def oste(*args: str) -> list[str]:
    return [sys.executable, "-m", "oste_core.cli", *args]


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def kill_after(cmd: list[str], delay_s: float, ready: str = "") -> tuple[bool, str]:
    """Start ``cmd``; once it printed a line (containing ``ready``), SIGKILL it ``delay_s`` later.
    Returns whether it was still running, and its output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if ready in line:
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(timeout=300)
    time.sleep(delay_s)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    return killed, "".join(lines)


def temp_files(folder: Path) -> list[Path]:
    from oste_core.utils.io import is_temp_file

    return [p for p in folder.rglob("*") if is_temp_file(p)] if folder.exists() else []


def timed(cmd: list[str], ready: str = "") -> float:
    """Seconds from ``cmd``'s first line containing ``ready`` to its end: the window to kill it in."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    first = None
    output = []
    for line in proc.stdout:
        output.append(line)
        if first is None and ready in line:
            first = time.perf_counter()
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{''.join(output)[-3000:]}")
    return time.perf_counter() - (first or time.perf_counter())


# ------------------------------------------------------------------ scenarios
def train_kills(work: Path, data: Path, kills: int, rng: random.Random) -> list[Outcome]:
    from oste_core.engine.run_folder import RunFolder

    windows = {marker: timed(oste("train", str(data), "--out", str(work / f"train-timing-{marker}"), *TINY),
                             MARKERS[marker]) for marker in ("setup", "train")}
    outcomes = []
    for k in range(kills):
        run_dir = work / f"train-{k}"
        marker = "setup" if k % 3 == 0 else "train"
        delay = rng.uniform(0, windows[marker])
        killed, _ = kill_after(oste("train", str(data), "--out", str(run_dir), *TINY), delay, MARKERS[marker])
        left = len(temp_files(run_dir))
        result = run(oste("train", str(data), "--out", str(run_dir), *TINY, "--resume"))
        if result.returncode == 0:
            try:
                RunFolder.load_weights(run_dir / "model.pt")
                clean = not temp_files(run_dir) and not (run_dir / ".oste.lock").exists()
                outcomes.append(Outcome("train", delay, killed, clean, "resumed", left,
                                        "" if clean else "temp files or the lock remain"))
            except Exception as exc:  # noqa: BLE001 - reported in the table
                outcomes.append(Outcome("train", delay, killed, False, "unloadable", left, str(exc)))
        else:
            reported = "no run to resume here" in result.stderr
            outcomes.append(Outcome("train", delay, killed, reported, "reported" if reported else "failed", left,
                                    result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""))
    return outcomes


def trained_run(work: Path, data: Path) -> Path:
    run_dir = work / "trained"
    if not (run_dir / "model.pt").exists():
        result = run(oste("train", str(data), "--out", str(run_dir), *TINY))
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
    return run_dir


def update_kills(work: Path, data: Path, kills: int, rng: random.Random) -> list[Outcome]:
    from oste_core.engine.predictor import Predictor

    run_dir = trained_run(work, data)
    command = oste("update", str(run_dir), str(data), "--budget", "2", "--device", "cpu")
    window = timed(command, MARKERS["update"])
    outcomes = []
    for _ in range(kills):
        delay = rng.uniform(0, window)
        killed, _ = kill_after(command, delay, MARKERS["update"])
        left = len(temp_files(run_dir))
        try:
            Predictor.from_run(run_dir, device="cpu")
            outcomes.append(Outcome("update", delay, killed, True, "readable", left))
        except Exception as exc:  # noqa: BLE001
            outcomes.append(Outcome("update", delay, killed, False, "unloadable", left, str(exc)))
    final = run(command)
    if final.returncode != 0 or temp_files(run_dir):
        outcomes.append(Outcome("update", 0.0, False, False, "last update failed", len(temp_files(run_dir)),
                                final.stderr[-500:]))
    return outcomes


def complete_files(folder: Path) -> list[str]:
    """The files under ``folder`` that are not complete (temp files aside)."""
    from oste_core.data import load_mask
    from oste_core.utils.io import is_temp_file

    bad = []
    for path in (p for p in folder.rglob("*") if p.is_file() and not is_temp_file(p)):
        try:
            if path.suffix == ".png":
                load_mask(path)
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".zip":
                with zipfile.ZipFile(path) as archive:
                    if archive.testzip() is not None or "labelmap.txt" not in archive.namelist():
                        raise ValueError("incomplete zip")
            elif path.suffix == ".txt" and path.stat().st_size == 0 and path.name != "problems.txt":
                raise ValueError("empty")
        except Exception as exc:  # noqa: BLE001
            bad.append(f"{path}: {exc}")
    return bad


def export_kills(work: Path, data: Path, kills: int, rng: random.Random) -> list[Outcome]:
    run_dir = trained_run(work, data)
    out = work / "export"
    command = oste("export", str(run_dir), str(data), "--out", str(out), "--format", "voc,labelme,cvat",
                   "--overwrite", "--device", "cpu")
    window = timed(command, MARKERS["export"])
    outcomes = []
    for _ in range(kills):
        delay = rng.uniform(0, window)
        killed, _ = kill_after(command, delay, MARKERS["export"])
        left = len(temp_files(out))
        bad = complete_files(out)
        outcomes.append(Outcome("export", delay, killed, not bad, "complete" if not bad else "incomplete", left,
                                "; ".join(bad[:3])))
    final = run(command)
    if final.returncode != 0 or temp_files(out) or complete_files(out):
        outcomes.append(Outcome("export", 0.0, False, False, "last export failed", len(temp_files(out)),
                                final.stderr[-500:]))
    return outcomes


SAVER = """
import sys
import numpy as np
from app.project import Project
root, stem = sys.argv[1], sys.argv[2]
masks = [np.load(sys.argv[3]), np.load(sys.argv[4])]
tags = [["circle"], ["circle", "square"]]
project = Project()
project.open(root)
document = project.open_document(stem, masks[0].shape)
document.set_all(masks[0], sparse=False)  # a full mask: each save writes verified/<stem>.png
print("ready", flush=True)
i = 0
while True:
    document.mask[:] = masks[i % 2]
    document.dirty = True
    project.save_document(stem, force=True)
    project.set_tags(stem, tags[i % 2])
    i += 1
"""


def tags_rows(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["image"]: row["tags"] for row in csv.DictReader(handle)}


def save_kills(work: Path, data: Path, kills: int, rng: random.Random) -> list[Outcome]:
    from app.project import Project
    from oste_core.data import load_mask, open_folder

    root = Path(shutil.copytree(data, work / "save-project"))
    folder = open_folder(root)
    sample = folder.samples[0]
    classes = folder.class_names
    if not {"circle", "square"} <= set(classes):
        raise RuntimeError(f"the demo classes changed: {classes}")
    generator = np.random.default_rng(0)
    # 768 x 768: large enough that a save takes a while (PNG encoding, the write)
    masks = [np.kron(generator.integers(0, 3, (96, 96)), np.ones((8, 8))).astype(np.uint8) for _ in range(2)]
    files = []
    for i, mask in enumerate(masks):
        files.append(work / f"mask{i}.npy")
        np.save(files[-1], mask)
    others = {rel: tags for rel, tags in tags_rows(folder.tags_path).items() if rel != sample.rel}
    command = [sys.executable, "-c", SAVER, str(root), sample.stem, *map(str, files)]
    outcomes = []
    for _ in range(kills):
        delay = rng.uniform(0.05, 1.5)
        killed, output = kill_after(command, delay, MARKERS["save"])
        left = len(temp_files(root))
        problems, which = [], []
        verified = root / "verified" / f"{sample.stem}.png"
        if verified.exists():
            mask = load_mask(verified)
            match = [i for i, m in enumerate(masks) if np.array_equal(mask, m)]
            which.append(f"mask {match[0]}" if match else "mask mixed")
            problems += [] if match else ["the verified mask is neither the old nor the new one"]
        rows = tags_rows(root / "tags.csv")
        if rows.get(sample.rel) not in ("circle", "circle;square") or {k: v for k, v in rows.items()
                                                                         if k != sample.rel} != others:
            problems.append(f"tags.csv is neither version: {rows.get(sample.rel)!r}")
        project = Project()
        try:
            project.open(root)  # the killed session's lock is stale; its temp files are removed
            project.close()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"cannot open the folder again: {exc}")
        if temp_files(root):
            problems.append("temp files remain after opening again")
        if "ready" not in output:
            problems.append(f"the saver did not start: {output[-500:]}")
        outcomes.append(Outcome("save", delay, killed, not problems, ", ".join(which) or "no mask yet", left,
                                "; ".join(problems)))
    return outcomes


RUNNERS = {"train": train_kills, "update": update_kills, "export": export_kills, "save": save_kills}


def table(outcomes: list[Outcome]) -> str:
    lines = ["| scenario | kills | killed mid-run | recovered | temp files left by the kill | failures |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in SCENARIOS:
        rows = [o for o in outcomes if o.scenario == name]
        if rows:
            kinds = ", ".join(f"{kind} {sum(o.recovered == kind for o in rows)}" for kind in
                              dict.fromkeys(o.recovered for o in rows if o.ok))
            lines.append(f"| {name} | {len(rows)} | {sum(o.killed for o in rows)} | {sum(o.ok for o in rows)} "
                         f"({kinds}) | {sum(o.temp_files_left for o in rows)} | {sum(not o.ok for o in rows)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=12, help="kill points per scenario (default 12)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every outcome as JSON")
    args = parser.parse_args(argv)
    from oste_core.data import write_demo_data

    rng = random.Random(args.seed)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="oste-crash-") as tmp:
        work = Path(tmp)
        data = write_demo_data(work / "data", n=8, size=64, seed=0)
        for name in args.scenarios.split(","):
            outcomes += RUNNERS[name](work, data, args.kills, rng)
            print(f"{name}: done", file=sys.stderr, flush=True)
    print(table(outcomes))
    for outcome in (o for o in outcomes if not o.ok):
        print(f"FAILED {outcome.scenario} after {outcome.delay_s:.2f} s: {outcome.recovered}: {outcome.detail}")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
