"""Full disks: the free-space check before an export and the feature cache, and what happens when the disk
fills up anyway. On a real small file system (a tmpfs mounted for the test; skipped where mounting is not
allowed) that the test fills with a real file."""
from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from oste_core.data import load_mask, open_folder
from oste_core.engine.feature_cache import CACHE_DIR, FeatureCache
from oste_core.engine.trainer import Trainer
from oste_core.export import export_masks
from oste_core.models import OSTEModel
from oste_core.utils.disk import DiskFullError, check_free_space, format_bytes, free_bytes
from oste_core.utils.io import is_temp_file


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk("2m")``: a tmpfs of that size, unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a file that takes the disk's free space, all of it but about ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        for chunk in (2**20, 4096):
            try:
                while free_bytes(disk) - chunk >= leave:
                    handle.write(b"\0" * chunk)
                    handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_the_free_space_check_names_the_folder_the_space_needed_and_free(tmp_path):
    free = free_bytes(tmp_path)
    check_free_space(tmp_path, 1024, "a small file")  # room enough: no error
    with pytest.raises(DiskFullError) as caught:
        check_free_space(tmp_path, free + 2**40, "exporting 3 image(s)")
    message = str(caught.value)
    assert str(tmp_path) in message and "exporting 3 image(s)" in message
    assert f"needs about {format_bytes(free + 2**40 + 16 * 2**20)}" in message and "free" in message
    assert caught.value.errno == errno.ENOSPC


def test_an_export_that_cannot_fit_is_refused_before_anything_is_written(demo_folder, small_disk):
    disk = small_disk("1m")
    folder = open_folder(demo_folder)
    items = [(s, load_mask(s.gt_mask)) for s in folder.samples]
    with pytest.raises(DiskFullError, match="not enough free space") as caught:
        export_masks(items, disk / "out", folder.class_names, formats=("voc", "labelme", "cvat"))
    assert str(disk / "out") in str(caught.value) and "needs about" in str(caught.value)
    assert files_under(disk) == []


def test_a_disk_that_fills_during_an_export_keeps_no_half_export(demo_folder, small_disk):
    disk = small_disk("24m")  # room for the estimate and its reserve; filled after the first image
    folder = open_folder(demo_folder)
    items = [(s, load_mask(s.gt_mask)) for s in folder.samples]

    def fill_after_first(done: int, _total: int) -> None:
        if done == 1:
            fill(disk)

    with pytest.raises(DiskFullError) as caught:
        export_masks(items, disk / "out", folder.class_names, formats=("voc", "labelme", "cvat"),
                     on_progress=fill_after_first)
    message = str(caught.value)
    assert str(disk / "out") in message and "filled up after 1 of 12" in message and "removed the" in message
    assert files_under(disk / "out") == [] and not (disk / "out").exists()


def fast_config(**overrides):
    return tiny_config(**{"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0,
                          **overrides})


@pytest.mark.slow
def test_a_full_disk_while_caching_features_stops_clearly_and_the_run_resumes(demo_folder, small_disk):
    disk = small_disk("24m")
    run = disk / "run"
    filler: list[Path] = []

    def on_event(event) -> None:
        if event.kind == "start" and not filler:  # the run folder is written; the features are next
            filler.append(fill(disk, leave=2**20))

    with pytest.raises(DiskFullError) as caught:
        Trainer(fast_config(), demo_folder, run, on_event=on_event).run()
    message = str(caught.value)
    assert str(run / CACHE_DIR) in message and "needs about" in message and "free" in message
    assert "resume" in message
    assert not [p for p in files_under(run) if is_temp_file(p)] and not (run / ".oste.lock").exists()
    filler[0].unlink()  # the user frees some space (and this test makes room for the checkpoints, ~20 MB each)
    subprocess.run(["mount", "-o", "remount,size=160m", str(disk)], check=True)
    events = []
    Trainer(fast_config(), demo_folder, run, on_event=events.append).run(resume=True)
    assert torch.load(run / "model.pt", weights_only=False)["iteration"] == 4
    assert any("no checkpoint yet" in e.message for e in events)


def test_a_disk_full_while_writing_a_cache_file_is_one_clear_error(demo_folder, small_disk):
    disk = small_disk("4m")
    cfg = fast_config()
    model = OSTEModel(cfg.model, num_classes=5)
    cache = FeatureCache(disk / "run", model, "test", 48, 64, torch.device("cpu"))
    image = open_folder(demo_folder).samples[0].image_path
    fill(disk)
    with pytest.raises(DiskFullError, match="the disk filled up while caching backbone features") as caught:
        cache.get(image)
    assert str(disk / "run" / CACHE_DIR) in str(caught.value)
    assert [p for p in files_under(disk) if p.name != "filler"] == []  # the temp file is gone
    shutil.rmtree(disk / "run", ignore_errors=True)
