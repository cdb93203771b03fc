"""TrainDataset: output shapes and dtypes, padding, verified masks, flips, determinism."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from oste_core.data import TrainDataset, open_folder, seed_worker, write_demo_data
from oste_core.data.dataset import IMAGENET_MEAN
from oste_core.export.palette import save_palette_png


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_demo_data(tmp_path_factory.mktemp("aug") / "demo", n=6, size=48, seed=3)
    mask = np.array(Image.open(root / "masks" / "demo_0001.png"))
    save_palette_png(root / "verified" / "demo_0001.png", mask)
    return root


def test_item_layout_and_padding(demo: Path) -> None:
    folder = open_folder(demo)
    dataset = TrainDataset(folder, crop=64, scale_range=(0.5, 1.0), max_side=48)
    torch.manual_seed(0)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert item["image_uint8"].shape == (3, 64, 64) and item["image_uint8"].dtype == torch.uint8
        assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.int64
        assert item["valid"].shape == (64, 64) and item["valid"].dtype == torch.bool
        assert item["tags"].shape == (5,) and item["tags"].dtype == torch.float32
        assert item["index"] == index
        expected_tags = torch.zeros(5)
        expected_tags[[k - 1 for k in folder.tag_indices(folder.samples[index])]] = 1
        assert torch.equal(item["tags"], expected_tags)
        padding = ~item["valid"]
        assert padding.any()  # images (<= 48 px) are smaller than the crop
        assert (item["mask"][padding] == 255).all()
        mean_colour = torch.tensor([round(m * 255) for m in IMAGENET_MEAN], dtype=torch.uint8)
        assert (item["image_uint8"].permute(1, 2, 0)[padding] == mean_colour).all()
        assert item["image"].permute(1, 2, 0)[padding].abs().max() < 0.02  # about 0 once normalised
        if folder.samples[index].stem == "demo_0001":
            assert item["has_mask"] is True
            inside = item["mask"][item["valid"]]
            assert inside.max() <= 5 and (inside > 0).any()
        else:
            assert item["has_mask"] is False and (item["mask"] == 255).all()


def test_crop_smaller_than_image_has_no_padding(demo: Path) -> None:
    dataset = TrainDataset(open_folder(demo), crop=16, scale_range=(1.0, 1.5))
    torch.manual_seed(1)
    item = dataset[2]
    assert item["image"].shape == (3, 16, 16) and item["valid"].all()


def test_mask_follows_scaling_and_flip(tmp_path: Path) -> None:
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    labels = np.where(np.arange(30) < 10, 1, 2).astype(np.uint8)[None].repeat(20, 0)
    save_palette_png(tmp_path / "verified" / "a.png", labels)
    (tmp_path / "tags.csv").write_text("image,tags\na.png,red;blue\n", encoding="utf-8")
    (tmp_path / "classes.txt").write_text("red\nblue\n", encoding="utf-8")
    dataset = TrainDataset(open_folder(tmp_path), crop=40, scale_range=(0.7, 1.3))  # the whole image fits
    torch.manual_seed(0)
    leftmost_labels = set()
    for _ in range(12):
        item = dataset[0]
        image, mask, valid = item["image_uint8"].permute(1, 2, 0).numpy().astype(int), item["mask"].numpy(), item["valid"].numpy()
        red = (image[..., 0] > 200) & (image[..., 2] < 50)
        blue = (image[..., 2] > 200) & (image[..., 0] < 50)
        assert (mask[red] == 1).all() and (mask[blue] == 2).all()
        assert 14 <= valid.sum(0).max() <= 26 and (mask[valid] != 255).all()
        leftmost_labels.add(int(mask[valid][0]))
    assert leftmost_labels == {1, 2}  # flipped and not flipped both occurred


def _batches(dataset: TrainDataset, workers: int) -> list[dict]:
    generator = torch.Generator().manual_seed(7)
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=workers, worker_init_fn=seed_worker,
                        generator=generator)
    return list(loader)


def test_deterministic_given_seeds(demo: Path) -> None:
    dataset = TrainDataset(open_folder(demo), crop=32)
    torch.manual_seed(5)
    first = [dataset[i] for i in range(3)]
    torch.manual_seed(5)
    second = [dataset[i] for i in range(3)]
    for a, b in zip(first, second):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    run_a, run_b = _batches(dataset, workers=2), _batches(dataset, workers=2)
    for a, b in zip(run_a, run_b):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])


def test_bad_settings_are_rejected(demo: Path) -> None:
    with pytest.raises(ValueError, match="scale_range"):
        TrainDataset(open_folder(demo), scale_range=(1.5, 0.5))


LOADER_AFTER_OPENCV = """
import sys
import cv2
import numpy as np
from torch.utils.data import DataLoader
from oste_core.data import TrainDataset, open_folder, seed_worker

cv2.setNumThreads(4)  # the parent's OpenCV thread pool is running before the workers fork
frame = np.random.rand(1500, 1500).astype(np.float32)
for _ in range(3):
    cv2.GaussianBlur(cv2.resize(frame, (1200, 1200)), (31, 31), 5)
loader = DataLoader(TrainDataset(open_folder(sys.argv[1]), crop=64), batch_size=2, num_workers=2,
                    worker_init_fn=seed_worker)
print(sum(1 for _ in zip(range(3), loader)))
"""


def test_loader_workers_start_after_the_parent_used_opencv(demo: Path) -> None:
    """Regression: a worker init that reconfigured OpenCV's threads deadlocked every forked worker."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LOADER_AFTER_OPENCV, str(demo)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "3"
