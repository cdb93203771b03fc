"""Synthetic demo data: deterministic, consistent with its tags, quick, and learnable."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from oste_core.data import DEMO_CLASSES, load_image, load_mask, open_folder, write_demo_data


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_data(tmp_path_factory.mktemp("synthetic") / "demo", n=40, size=64, seed=0)


def test_same_seed_gives_identical_files(demo: Path, tmp_path: Path) -> None:
    again = write_demo_data(tmp_path / "again", n=40, size=64, seed=0)
    assert _files(again) == _files(demo)
    other = write_demo_data(tmp_path / "other", n=40, size=64, seed=1)
    assert _files(other)["tags.csv"] != _files(demo)["tags.csv"]


def test_layout_and_masks_agree_with_tags(demo: Path) -> None:
    folder = open_folder(demo)
    assert folder.layout == "native" and folder.class_names == list(DEMO_CLASSES)
    assert len(folder.samples) == 40 and folder.problems == [] and folder.untagged == []
    classes_per_image = []
    for sample in folder.samples:
        image, mask = load_image(sample.image_path), load_mask(sample.gt_mask)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        present = sorted(set(np.unique(mask).tolist()) - {0})
        assert present == sorted(folder.tag_indices(sample))
        assert 1 <= len(present) <= 3 and (mask == 0).mean() > 0.2
        classes_per_image.append(len(present))
    assert set(classes_per_image) == {1, 2, 3}
    assert {tag for s in folder.samples for tag in s.tags} == set(DEMO_CLASSES)


def test_rings_have_holes(demo: Path) -> None:
    ring = DEMO_CLASSES.index("ring") + 1
    holes = 0
    for mask_path in sorted((demo / "masks").glob("*.png")):
        region = (load_mask(mask_path) == ring).astype(np.uint8)
        if region.any():
            _, hierarchy = cv2.findContours(region, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            holes += int((hierarchy[0][:, 3] != -1).sum())
    assert holes > 0


def test_classes_are_separable_by_colour(demo: Path) -> None:
    """A proxy for learnability: nearest mean-colour classification of object regions is accurate."""
    folder = open_folder(demo)
    regions: list[tuple[int, np.ndarray]] = []
    for sample in folder.samples:
        image, mask = load_image(sample.image_path).astype(np.float32), load_mask(sample.gt_mask)
        regions += [(k, image[mask == k].mean(0)) for k in np.unique(mask) if k != 0]
    centroids = {k: np.mean([c for label, c in regions if label == k], axis=0) for k in range(1, 6)}
    correct = sum(min(centroids, key=lambda j: np.linalg.norm(colour - centroids[j])) == k for k, colour in regions)
    assert correct / len(regions) > 0.9


def test_fast_enough(tmp_path: Path) -> None:
    start = time.perf_counter()
    write_demo_data(tmp_path / "timed", n=50, size=128, seed=2)
    assert time.perf_counter() - start < 5.0  # ~0.5 s on a laptop core; generous for shared CI


def test_refuses_non_empty_target(demo: Path) -> None:
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_data(demo, n=2)
    assert sorted(p.name for p in demo.parent.iterdir()) == ["demo"]  # no staging folder left behind


def test_empty_existing_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    root = write_demo_data(tmp_path / "out", n=3, size=32)
    assert len(open_folder(root).samples) == 3
