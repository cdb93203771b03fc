"""Export round trips (VOC, labelme, CVAT), overwrite protection and heatmaps, on real files."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from oste_core.data import LabelledFolder, Sample, load_mask, open_folder, write_demo_data
from oste_core.export import (
    VOC_PALETTE,
    ExportExistsError,
    ExportTargetError,
    colorize,
    export_folder,
    export_masks,
    save_heatmap_png,
    save_palette_png,
)
from oste_core.export.labelme import labelme_to_mask, mask_to_shapes

FORMATS = ("voc", "labelme", "cvat")


@pytest.fixture
def demo(tmp_path: Path) -> LabelledFolder:
    return open_folder(write_demo_data(tmp_path / "demo", n=6, size=64, seed=4))


def demo_items(folder: LabelledFolder) -> list[tuple[Sample, np.ndarray]]:
    """Ground-truth masks with an unsure (255) patch in each."""
    items = []
    for sample in folder.samples:
        mask = load_mask(sample.gt_mask)
        mask[2:6, 40:60] = 255
        items.append((sample, mask))
    return items


def test_voc_palette() -> None:
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    assert VOC_PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert VOC_PALETTE[15].tolist() == [192, 128, 128]  # person
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]
    assert colorize(np.array([[1, 255]], np.uint8)).tolist() == [[[128, 0, 0], [224, 224, 192]]]


def test_palette_png_round_trip(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [20, 255, 3]], np.uint8)
    path = save_palette_png(tmp_path / "m.png", mask)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array(image).tolist() == mask.tolist()
        assert image.getpalette()[255 * 3:255 * 3 + 3] == [224, 224, 192]


def test_voc_export_round_trip(demo: LabelledFolder, tmp_path: Path) -> None:
    items = demo_items(demo)
    progress: list[tuple[int, int]] = []
    summary = export_masks(items, tmp_path / "out", demo.class_names, on_progress=lambda d, t: progress.append((d, t)))
    assert summary.counts == {"voc": 6} and summary.skipped == [] and progress[-1] == (6, 6)
    for sample, mask in items:
        path = tmp_path / "out" / "voc" / "SegmentationClass" / f"{sample.stem}.png"
        assert np.array(Image.open(path)).tolist() == mask.tolist()
    names = (tmp_path / "out" / "voc" / "class_names.txt").read_text(encoding="utf-8").split()
    assert names == ["background", *demo.class_names]
    listed = (tmp_path / "out" / "voc" / "ImageSets" / "Segmentation" / "default.txt").read_text().split()
    assert listed == [s.stem for s, _ in items]


def test_labelme_round_trip_with_holes(demo: LabelledFolder, tmp_path: Path) -> None:
    items = demo_items(demo)
    export_masks(items, tmp_path / "out", demo.class_names, formats=("labelme",))
    ring = demo.class_names.index("ring") + 1
    saw_hole = False
    for sample, mask in items:
        json_path = tmp_path / "out" / "labelme" / f"{sample.stem}.json"
        document = json.loads(json_path.read_text(encoding="utf-8"))
        assert document["version"] == "5.3.1" and document["imageData"] is None
        assert (document["imageHeight"], document["imageWidth"]) == mask.shape
        assert document["flags"] == {name: name in sample.tags for name in demo.class_names}
        assert (json_path.parent / document["imagePath"]).resolve() == sample.image_path.resolve()
        assert all(s["shape_type"] == "polygon" and s["group_id"] is None and s["flags"] == {}
                   for s in document["shapes"])
        labels = [s["label"] for s in document["shapes"]]
        assert "__ignore__" in labels
        saw_hole |= (mask == ring).any() and "_background_" in labels
        assert (labelme_to_mask(json_path, demo.class_names) == mask).mean() >= 0.98
    assert saw_hole


def test_labelme_nested_regions_are_exact() -> None:
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (20, 20), 16, 1, -1)  # a ring of class 1 ...
    cv2.circle(mask, (20, 20), 10, 0, -1)
    cv2.rectangle(mask, (17, 17), (23, 23), 2, -1)  # ... around a square of class 2 ...
    mask[19:22, 19:22] = 255  # ... around an unsure patch
    mask[0:2, 0:1] = 2  # a 2-pixel region: below min_area, dropped
    shapes = mask_to_shapes(mask, ["ring", "square"], epsilon=0)  # every traced vertex: exact
    assert [s["label"] for s in shapes] == ["ring", "_background_", "square", "_background_", "__ignore__"]
    document = {"imageHeight": 40, "imageWidth": 40, "shapes": shapes}
    redrawn = np.zeros_like(mask)
    for shape in document["shapes"]:
        value = {"_background_": 0, "__ignore__": 255, "ring": 1, "square": 2}[shape["label"]]
        cv2.fillPoly(redrawn, [np.rint(np.array(shape["points"])).astype(np.int32)], value)
    expected = mask.copy()
    expected[0:2, 0:1] = 0
    assert np.array_equal(redrawn, expected)


def test_cvat_zip(demo: LabelledFolder, tmp_path: Path) -> None:
    items = demo_items(demo)
    summary = export_masks(items, tmp_path / "out", demo.class_names, formats=("cvat",))
    zip_path = tmp_path / "out" / "cvat_segmentation_mask_1.1.zip"
    assert summary.written == [zip_path]
    assert len(summary.notes) == 1 and "'unsure'" in summary.notes[0] and "note: CVAT" in str(summary)
    with zipfile.ZipFile(zip_path) as archive:
        stems = [s.stem for s, _ in items]
        expected = {"labelmap.txt", "ImageSets/Segmentation/default.txt"}
        expected |= {f"SegmentationClass/{s}.png" for s in stems} | {f"SegmentationObject/{s}.png" for s in stems}
        assert set(archive.namelist()) == expected
        lines = archive.read("labelmap.txt").decode().splitlines()
        assert lines[0] == "# label:color_rgb:parts:actions" and lines[1] == "background:0,0,0::"
        assert lines[2] == f"{demo.class_names[0]}:128,0,0::" and len(lines) == 2 + len(demo.class_names) + 1
        assert lines[-1] == "unsure:224,224,192::"  # unsure is a label of its own, in the VOC void colour
        labels = [line.split(":")[0] for line in lines[1:]]
        colour_to_label = {tuple(int(c) for c in line.split(":")[1].split(",")): line.split(":")[0]
                           for line in lines[1:]}
        assert len(colour_to_label) == len(labels)  # one distinct colour per label
        names = ["background", *demo.class_names]
        assert archive.read("ImageSets/Segmentation/default.txt").decode().split() == stems
        for sample, mask in items:
            rgb = np.array(Image.open(io.BytesIO(archive.read(f"SegmentationClass/{sample.stem}.png"))).convert("RGB"))
            decoded = np.vectorize(lambda r, g, b: colour_to_label[(r, g, b)])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
            expected = np.where(mask == 255, "unsure", np.array(names + [""] * (255 - len(names)) + ["unsure"])[mask])
            assert np.array_equal(decoded, expected)
            objects = np.array(Image.open(io.BytesIO(archive.read(f"SegmentationObject/{sample.stem}.png"))).convert("RGB"))
            regions = sum(cv2.connectedComponents((mask == k).astype(np.uint8), connectivity=8)[0] - 1
                          for k in np.unique(mask) if k != 0)
            colours = {tuple(c) for c in objects.reshape(-1, 3)} - {(0, 0, 0)}
            assert len(colours) == regions


def test_existing_export_is_never_overwritten_silently(demo: LabelledFolder, tmp_path: Path) -> None:
    items = demo_items(demo)
    out = tmp_path / "out"
    export_masks(items[:3], out, demo.class_names, formats=FORMATS)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ExportExistsError) as caught:
        export_masks(items, out, demo.class_names, formats=FORMATS)
    assert len(caught.value.existing) == 3 + 2 + 3 + 1 + 1 and "already exist" in str(caught.value)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # nothing written, not even the three new images
    summary = export_masks(items, out, demo.class_names, formats=FORMATS, overwrite=True)
    assert summary.counts == {"voc": 6, "labelme": 6, "cvat": 6}
    assert len(list((out / "labelme").glob("*.json"))) == 6


def test_refuses_to_write_into_verified(demo: LabelledFolder) -> None:
    verified = demo.root / "verified"
    with pytest.raises(ExportTargetError, match="verified"):
        export_masks(demo_items(demo), verified, demo.class_names)
    with pytest.raises(ExportTargetError, match="verified"):
        export_masks(demo_items(demo), verified / "sub", demo.class_names)
    assert not verified.exists()


def test_unreadable_image_is_skipped_and_size_is_restored(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    (tmp_path / "broken.png").write_bytes(b"nope")
    small = np.zeros((15, 20), np.uint8)
    small[5:10, 5:10] = 1
    items = [
        (Sample(tmp_path / "big.png", "big.png", "big", ["a"]), small),  # predicted on a half-size image
        (Sample(tmp_path / "broken.png", "broken.png", "broken", ["a"]), small),
    ]
    summary = export_masks(items, tmp_path / "out", ["a"], formats=("voc", "labelme"))
    assert summary.counts == {"voc": 1, "labelme": 1}
    assert len(summary.skipped) == 1 and "broken.png" in summary.skipped[0]
    exported = np.array(Image.open(tmp_path / "out" / "voc" / "SegmentationClass" / "big.png"))
    assert exported.shape == (30, 40) and exported[15, 15] == 1 and exported[0, 0] == 0
    document = json.loads((tmp_path / "out" / "labelme" / "big.json").read_text())
    assert (document["imageHeight"], document["imageWidth"]) == (30, 40)
    assert summary.problems == []
    assert "voc 1, labelme 1" in str(summary) and "broken.png" in str(summary)


def test_mask_with_wrong_proportions_is_reported(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    sample = Sample(tmp_path / "a.png", "a.png", "a", [])
    summary = export_masks([(sample, np.zeros((40, 30), np.uint8))], tmp_path / "out", ["x"])
    assert summary.counts == {"voc": 1} and len(summary.problems) == 1 and "proportions" in summary.problems[0]


def test_bad_format_name(demo: LabelledFolder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_masks(demo_items(demo), tmp_path / "out", demo.class_names, formats=("coco",))


def test_heatmap_png(tmp_path: Path) -> None:
    cam = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (8, 1))
    path = save_heatmap_png(tmp_path / "heat.png", cam)
    heat = np.array(Image.open(path).convert("RGB"))
    assert heat.shape == (8, 16, 3)
    assert heat[0, 0, 2] > 100 and heat[0, 0, 0] < 50  # low = blue
    assert heat[0, -1, 0] > 100 and heat[0, -1, 2] < 50  # high = red
    image = np.full((16, 32, 3), 255, np.uint8)
    blended = np.array(Image.open(save_heatmap_png(tmp_path / "blend.png", cam, image, alpha=0.5)).convert("RGB"))
    assert blended.shape == (16, 32, 3) and blended.min() >= 100  # half white everywhere


def test_cvat_without_unsure_pixels_has_no_unsure_label(demo: LabelledFolder, tmp_path: Path) -> None:
    items = [(sample, load_mask(sample.gt_mask)) for sample in demo.samples]
    summary = export_masks(items, tmp_path / "out", demo.class_names, formats=("cvat",))
    with zipfile.ZipFile(tmp_path / "out" / "cvat_segmentation_mask_1.1.zip") as archive:
        assert "unsure" not in archive.read("labelmap.txt").decode()
    assert summary.notes == []


def write_rgb(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 30)).save(path)
    return path


def test_labelme_polygons_are_traced_small_and_simplified(tmp_path: Path) -> None:
    """An ellipse predicted at 1024x768 for a 2000x1500 image: few vertices, same pixels once redrawn."""
    image = write_rgb(tmp_path / "big.png", 2000, 1500)
    small = np.zeros((768, 1024), np.uint8)
    cv2.ellipse(small, (512, 384), (160, 95), 20, 0, 360, 1, -1)
    cv2.ellipse(small, (512, 384), (60, 30), 20, 0, 360, 0, -1)  # a hole ...
    cv2.circle(small, (850, 150), 40, 2, -1)  # ... and a second class
    small[600:640, 100:180] = 255
    summary = export_masks([(Sample(image, "big.png", "big", ["a", "b"]), small)], tmp_path / "out", ["a", "b"],
                           formats=("labelme", "voc"))
    assert summary.counts == {"labelme": 1, "voc": 1}
    enlarged = cv2.resize(small, (2000, 1500), interpolation=cv2.INTER_NEAREST)
    json_path = tmp_path / "out" / "labelme" / "big.json"
    document = json.loads(json_path.read_text(encoding="utf-8"))
    assert (document["imageHeight"], document["imageWidth"]) == (1500, 2000)
    assert [s["label"] for s in document["shapes"]] == ["a", "_background_", "b", "__ignore__"]
    redrawn = labelme_to_mask(json_path, ["a", "b"])
    assert (redrawn == enlarged).mean() >= 0.98
    for value in (1, 2, 255):
        ours, theirs = redrawn == value, enlarged == value
        assert (ours & theirs).sum() / (ours | theirs).sum() >= 0.97, value
    ellipse = (enlarged == 1).astype(np.uint8)  # the old trace: on the blocky enlarged mask, unsimplified
    old = sum(len(c) for c in cv2.findContours(ellipse, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)[0])
    new = sum(len(s["points"]) for s in document["shapes"][:2])
    assert new * 10 <= old, (new, old)
    labels = (tmp_path / "out" / "labelme" / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels == ["__ignore__", "_background_", "a", "b"]


def test_verified_masks_export_at_full_resolution(tmp_path: Path) -> None:
    """A verified mask of a 2000x1500 image keeps every pixel of a small region (never shrunk)."""
    root = tmp_path / "project"
    write_rgb(root / "images" / "big.png", 2000, 1500)
    write_rgb(root / "images" / "other.png", 40, 30)
    write_rgb(root / "images" / "plain.png", 40, 30)
    (root / "tags.csv").write_text("image,tags\nimages/big.png,a\nimages/other.png,a\nimages/plain.png,a\n",
                                   encoding="utf-8")
    verified = np.zeros((1500, 2000), np.uint8)
    cv2.circle(verified, (1500, 300), 25, 1, -1)  # a small region
    save_palette_png(root / "verified" / "big.png", verified)
    old_name = np.zeros((30, 40), np.uint8)
    old_name[5:10, 5:10] = 1
    save_palette_png(root / "verified" / "images__other.png", old_name)  # saved by an older version
    folder = open_folder(root)
    summary = export_folder(folder, tmp_path / "out", formats=("voc", "labelme", "cvat"), what="verified")
    assert summary.counts == {"voc": 2, "labelme": 2, "cvat": 2} and summary.skipped == []  # only verified images
    assert np.array_equal(load_mask(tmp_path / "out" / "voc" / "SegmentationClass" / "other.png"), old_name)
    exported = load_mask(tmp_path / "out" / "voc" / "SegmentationClass" / "big.png")
    assert exported.shape == (1500, 2000) and int((exported == 1).sum()) == int((verified == 1).sum())
    assert np.array_equal(exported, verified)
    with pytest.raises(ValueError, match="needs a trained run"):
        export_folder(folder, tmp_path / "out2", what="suggestion")
    with pytest.raises(ExportTargetError):
        export_folder(folder, root / "verified" / "x", what="verified")
