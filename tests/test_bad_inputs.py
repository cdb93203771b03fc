"""A corpus of awkward and broken inputs, made on the fly: every case is loaded correctly,
skipped and reported, or rejected with a clear error naming the file -- never a crash."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oste_core.data import (
    FolderError,
    ImageLoadError,
    TrainDataset,
    check_image,
    image_size,
    load_image,
    load_mask,
    open_folder,
    validate_images,
)
from oste_core.export.palette import VOC_PALETTE, colorize

UNICODE_NAME = "ünïcødé_猫.png"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_corpus(root: Path) -> dict[str, Path]:
    """Good-but-awkward and broken images, plus tags.csv naming all of them and a missing file."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = root / name
        files[name].write_bytes(data)

    jpeg = io.BytesIO()
    noise.save(jpeg, format="JPEG", quality=90)
    put("good.jpg", jpeg.getvalue())
    put("corrupt.jpg", jpeg.getvalue()[:200] + bytes(rng.integers(0, 255, 3000, dtype=np.uint8)))
    put("truncated.png", png_bytes(noise)[: len(png_bytes(noise)) // 2])
    put("cut.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) * 2 // 3])
    put("zero.jpg", b"")
    put("text.jpg", b"this is not an image\n")
    put("gray16.png", png_bytes(Image.fromarray(np.array([[0, 257 * 100], [65535, 257]], dtype=np.uint16))))
    put("gray12.png", png_bytes(Image.fromarray(np.array([[0, 4095], [2048, 16]], dtype=np.uint16))))
    put("gray.png", png_bytes(Image.new("L", (8, 6), 77)))
    rgba = Image.new("RGBA", (8, 6), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    put("rgba.png", png_bytes(rgba))
    palette = Image.new("P", (8, 6), 1)
    palette.putpalette([0, 0, 0, 250, 5, 5] + [0] * 762)
    put("palette.png", png_bytes(palette))
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.new("RGB", (40, 20), (0, 200, 0)).save(rotated, format="JPEG", exif=exif)
    put("exif_rot.jpg", rotated.getvalue())
    put("huge.png", png_bytes(Image.new("RGB", (3000, 200), (9, 9, 9))))
    webp, bmp, tiff = io.BytesIO(), io.BytesIO(), io.BytesIO()
    noise.save(webp, format="WEBP")
    noise.save(bmp, format="BMP")
    noise.convert("CMYK").save(tiff, format="TIFF")
    put("photo.webp", webp.getvalue())
    put("bitmap.bmp", bmp.getvalue())
    put("cmyk.tif", tiff.getvalue())
    put(UNICODE_NAME, png_bytes(noise))
    rows = "".join(f"{name},thing\n" for name in files) + "missing.jpg,thing\n"
    (root / "tags.csv").write_text("image,tags\n" + rows, encoding="utf-8")
    return files


BROKEN = {"corrupt.jpg", "cut.jpg", "truncated.png", "zero.jpg", "text.jpg"}


def test_corpus_open_validate_and_report(tmp_path: Path) -> None:
    files = make_corpus(tmp_path / "corpus")
    folder = open_folder(tmp_path / "corpus")
    assert any("missing.jpg" in p and "not found" in p and "tags.csv" in p for p in folder.problems)
    assert len(folder.samples) == len(files)
    progress: list[tuple[int, int]] = []
    bad = validate_images(folder, on_progress=lambda done, total: progress.append((done, total)))
    assert progress[-1] == (len(files), len(files))
    assert sorted(Path(line.split(": ")[0]).name for line in bad) == sorted(BROKEN)
    assert {s.rel for s in folder.samples} == set(files) - BROKEN
    assert all(line in folder.problems for line in bad)
    for sample in folder.samples:  # every remaining image loads as (H, W, 3) uint8 RGB
        pixels = load_image(sample.image_path, max_side=512)
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3


@pytest.mark.parametrize("name,reason", [
    ("zero.jpg", "empty file"),
    ("text.jpg", "not an image"),
    ("corrupt.jpg", "corrupt or truncated"),
    ("truncated.png", "corrupt or truncated"),
    ("cut.jpg", "corrupt or truncated"),
])
def test_broken_files_raise_image_load_error(tmp_path: Path, name: str, reason: str) -> None:
    files = make_corpus(tmp_path)
    with pytest.raises(ImageLoadError) as caught:
        load_image(files[name])
    assert caught.value.path == files[name]
    assert str(caught.value).startswith(f"{files[name]}: ") and reason in str(caught.value)
    with pytest.raises(ImageLoadError):
        check_image(files[name])


def test_awkward_images_are_normalised(tmp_path: Path) -> None:
    files = make_corpus(tmp_path)
    gray16 = load_image(files["gray16.png"])
    assert gray16.dtype == np.uint8 and gray16[:, :, 0].tolist() == [[0, 100], [255, 1]]
    assert load_image(files["gray12.png"])[:, :, 0].tolist() == [[0, 255], [128, 1]]  # 12-bit data, not dark
    gray = load_image(files["gray.png"])
    assert gray.shape == (6, 8, 3) and (gray == 77).all()
    rgba = load_image(files["rgba.png"])
    assert rgba[0, 0].tolist() == [255, 255, 255] and rgba[1, 1].tolist() == [10, 20, 30]  # composited on white
    assert load_image(files["palette.png"])[2, 2].tolist() == [250, 5, 5]
    rotated = load_image(files["exif_rot.jpg"])
    assert rotated.shape == (40, 20, 3)  # stored 40 wide x 20 high, displayed rotated
    assert image_size(files["exif_rot.jpg"]) == (40, 20)
    assert load_image(files["huge.png"], max_side=512).shape == (34, 512, 3)
    assert load_image(files["huge.png"], max_side=None).shape == (200, 3000, 3)
    assert load_image(files[UNICODE_NAME]).shape == (48, 64, 3)
    assert load_image(files["cmyk.tif"]).shape == (48, 64, 3)
    assert load_image(files["photo.webp"]).shape == (48, 64, 3)
    assert load_image(files["bitmap.bmp"]).shape == (48, 64, 3)


def test_large_jpeg_is_decoded_downscaled(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (30, 60, 90)).save(path, quality=80)
    pixels = load_image(path, max_side=256)
    assert pixels.shape == (192, 256, 3)
    assert np.abs(pixels.astype(int) - [30, 60, 90]).max() <= 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.png")


def test_unknown_class_in_tags_csv(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "classes.txt").write_text("cat\n", encoding="utf-8")
    (tmp_path / "tags.csv").write_text("image,tags\na.png,cat;unicorn;yeti\n", encoding="utf-8")
    with pytest.raises(FolderError) as caught:
        open_folder(tmp_path)
    message = str(caught.value)
    assert "tags.csv" in message and "unicorn" in message and "yeti" in message and "classes.txt" in message


def test_bad_tags_csv_header(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "tags.csv").write_text("file;labels\na.png;cat\n", encoding="utf-8")
    with pytest.raises(FolderError, match=r"tags\.csv.*image,tags"):
        open_folder(tmp_path)


def test_tags_csv_row_outside_folder_is_reported(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "tags.csv").write_text("image,tags\na.png,cat\n../b.png,cat\n", encoding="utf-8")
    folder = open_folder(tmp_path)
    assert [s.rel for s in folder.samples] == ["a.png"]
    assert any("line 3" in p and "relative" in p for p in folder.problems)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(FolderError, match=f"{empty}: no images found"):
        open_folder(empty)
    with pytest.raises(FolderError, match="folder not found"):
        open_folder(tmp_path / "does_not_exist")


def test_unreadable_image_during_training_is_skipped(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    (tmp_path / "tags.csv").write_text("image,tags\nb.png,x\na.png,x\n", encoding="utf-8")
    dataset = TrainDataset(open_folder(tmp_path), crop=8, scale_range=(1.0, 1.0))
    item = dataset[0]  # b.png is unreadable: the next sample comes instead
    assert item["index"] == 1 and item["image"].shape == (3, 8, 8)
    assert len(dataset.problems) == 1 and "b.png" in dataset.problems[0]
    assert dataset[0]["index"] == 1 and len(dataset.problems) == 1  # remembered, not retried


def test_corrupt_masks_are_dropped_by_validation(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "tags.csv").write_text("image,tags\na.png,x\n", encoding="utf-8")
    (tmp_path / "verified").mkdir()
    (tmp_path / "verified" / "a.png").write_bytes(b"\x89PNG broken")
    folder = open_folder(tmp_path)
    assert folder.samples[0].verified_mask is not None
    bad = validate_images(folder)
    assert len(folder.samples) == 1 and folder.samples[0].verified_mask is None
    assert len(bad) == 1 and "verified" in bad[0] and "mask ignored" in bad[0]


def test_mask_formats(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [15, 255, 20]], dtype=np.uint8)
    Image.fromarray(mask).save(tmp_path / "index.png")  # "L"
    Image.fromarray(mask.astype(np.uint16)).save(tmp_path / "index16.png")
    Image.fromarray(colorize(mask)).save(tmp_path / "rgb.png")
    noisy = np.clip(colorize(mask).astype(int) + 6, 0, 255).astype(np.uint8)  # e.g. after lossy saving
    Image.fromarray(noisy).save(tmp_path / "rgb_noisy.png")
    gray_rgb = np.repeat(np.array([[0, 1], [2, 3]], np.uint8)[:, :, None], 3, axis=2)
    Image.fromarray(gray_rgb).save(tmp_path / "gray_rgb.png")
    for name in ("index.png", "index16.png", "rgb.png", "rgb_noisy.png"):
        assert load_mask(tmp_path / name).tolist() == mask.tolist(), name
    assert load_mask(tmp_path / "gray_rgb.png").tolist() == [[0, 1], [2, 3]]
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]
    resized = load_mask(tmp_path / "index.png", shape=(4, 6))
    assert resized.shape == (4, 6) and set(np.unique(resized)) <= set(np.unique(mask))
    Image.fromarray(np.array([[300]], dtype=np.uint16)).save(tmp_path / "too_big.png")
    with pytest.raises(ImageLoadError, match="too_big.png: mask values must be 0..255"):
        load_mask(tmp_path / "too_big.png")
