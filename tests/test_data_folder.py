"""Layout detection and parsing of the three labelled-folder layouts, on tiny real folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oste_core.data import (
    VOC_CLASSES,
    FolderError,
    detect_layout,
    load_mask,
    open_folder,
    stem_for,
    summarise_problems,
    validate_images,
)
from oste_core.export.palette import save_palette_png


def write_image(path: Path, size: tuple[int, int] = (24, 16), colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def voc_xml(names: list[str]) -> str:
    objects = "".join(f"<object><name>{n}</name><bndbox><xmin>1</xmin></bndbox></object>" for n in names)
    return f"<annotation><filename>x.jpg</filename>{objects}</annotation>"


@pytest.fixture
def native(tmp_path: Path) -> Path:
    root = tmp_path / "native"
    write_image(root / "top.jpg")
    write_image(root / "a" / "b" / "deep.png")
    write_image(root / "a" / "untagged.png")
    write_image(root / "masks" / "not_an_image_source.png")
    write_image(root / "runs" / "x.png")
    write_image(root / ".cache" / "y.png")
    write_text(root / "classes.txt", "dog\ncat\n\n")
    write_text(root / "tags.csv", "image,tags\ntop.jpg,cat;dog\na/b/deep.png,\n")
    save_palette_png(root / "masks" / "top.png", np.ones((16, 24), np.uint8))
    save_palette_png(root / "verified" / "a__b__deep.png", np.zeros((16, 24), np.uint8))
    return root


def test_stem_rule() -> None:
    assert stem_for("img.jpg") == "img"
    assert stem_for("a/b/img.jpg") == "a__b__img"
    assert stem_for("a/x.tar.png") == "a__x.tar"


def test_native_layout(native: Path) -> None:
    folder = open_folder(native)
    assert folder.layout == "native" and detect_layout(native) == "native"
    assert folder.class_names == ["dog", "cat"]  # classes.txt order, blank line ignored
    by_stem = {s.stem: s for s in folder.samples}
    assert set(by_stem) == {"top", "deep"}  # file stems, at any depth
    top, deep = by_stem["top"], by_stem["deep"]
    assert top.tags == ["cat", "dog"] and folder.tag_indices(top) == [2, 1]
    assert deep.tags == [] and folder.tag_indices(deep) == []
    assert top.gt_mask == native / "masks" / "top.png" and top.verified_mask is None
    # a verified mask saved under the path stem (older versions) is still found
    assert deep.verified_mask == native / "verified" / "a__b__deep.png" and deep.gt_mask is None
    assert folder.verified_path(deep) == native / "verified" / "deep.png"  # ... and the next save uses the stem
    assert deep.image_path == native / "a" / "b" / "deep.png" and deep.rel == "a/b/deep.png"
    assert folder.untagged == ["a/untagged.png"]  # masks/, runs/ and .cache/ are never scanned
    assert folder.problems == []


def test_native_without_classes_file_uses_sorted_tags(tmp_path: Path) -> None:
    write_image(tmp_path / "1.png")
    write_image(tmp_path / "2.png")
    write_text(tmp_path / "tags.csv", "image,tags\n1.png, zebra ; ant\n2.png,ant\n")
    folder = open_folder(tmp_path)
    assert folder.class_names == ["ant", "zebra"]
    assert folder.find("1").tags == ["zebra", "ant"]


def test_set_tags_and_save_round_trip(native: Path) -> None:
    folder = open_folder(native)
    folder.set_tags("top", ["cat", "bird"])
    assert folder.class_names == ["dog", "cat", "bird"]
    new = folder.set_tags("a/untagged.png", ["dog"])  # an untagged image becomes a sample
    assert new.stem == "untagged" and folder.untagged == []
    folder.save_tags()
    again = open_folder(native)
    assert again.class_names == ["dog", "cat", "bird"]
    assert {s.stem: s.tags for s in again.samples} == {"top": ["cat", "bird"], "deep": [], "untagged": ["dog"]}
    with pytest.raises(ValueError, match="reserved"):
        folder.add_class("background")
    with pytest.raises(KeyError, match="nope"):
        folder.set_tags("nope", ["dog"])


def test_duplicate_stem_is_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "img.jpg")
    write_image(tmp_path / "img.png")
    write_text(tmp_path / "tags.csv", "image,tags\nimg.jpg,a\nimg.png,a\n")
    folder = open_folder(tmp_path)
    assert [s.rel for s in folder.samples] == ["img.jpg"]
    assert len(folder.problems) == 1 and "img.png" in folder.problems[0] and "same stem" in folder.problems[0]


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2012"
    for image_id in ("2007_000001", "2007_000002", "2007_000003"):
        write_image(root / "JPEGImages" / f"{image_id}.jpg")
    write_text(root / "Annotations" / "2007_000001.xml", voc_xml(["dog", "person", "dog"]))
    write_text(root / "Annotations" / "2007_000002.xml", voc_xml(["cat"]))
    write_text(root / "ImageSets" / "Segmentation" / "train.txt", "2007_000001\n")
    write_text(root / "ImageSets" / "Segmentation" / "val.txt", "2007_000002\n2007_000003\n")
    gt = np.zeros((16, 24), np.uint8)
    gt[2:8, 2:8] = VOC_CLASSES.index("dog") + 1
    gt[0, :] = 255
    save_palette_png(root / "SegmentationClass" / "2007_000001.png", gt)
    return root


def test_voc_layout(voc: Path) -> None:
    folder = open_folder(voc)
    assert folder.layout == "voc" and folder.class_names == list(VOC_CLASSES)
    assert [s.stem for s in folder.samples] == ["2007_000001", "2007_000002"]  # the annotated images
    first = folder.samples[0]
    assert first.tags == ["dog", "person"]
    assert folder.tag_indices(first) == [12, 15]
    assert first.rel == "JPEGImages/2007_000001.jpg"
    assert first.gt_mask == voc / "SegmentationClass" / "2007_000001.png"
    gt = load_mask(first.gt_mask)
    assert gt[3, 3] == 12 and gt[0, 0] == 255 and gt[10, 10] == 0
    assert folder.untagged == ["JPEGImages/2007_000003.jpg"]


def test_voc_splits(voc: Path) -> None:
    assert [s.stem for s in open_folder(voc, split="train").samples] == ["2007_000001"]
    val = open_folder(voc, split="val")
    assert [s.stem for s in val.samples] == ["2007_000002"]
    assert any("2007_000003.xml" in p and "no annotation" in p for p in val.problems)
    with pytest.raises(FolderError, match="available: train, val"):
        open_folder(voc, split="test")


def test_voc_save_tags_then_csv_wins(voc: Path) -> None:
    folder = open_folder(voc)
    folder.set_tags("2007_000002", ["cat", "sofa"])
    folder.save_tags()
    assert (voc / "tags.csv").is_file() and (voc / "classes.txt").is_file()
    again = open_folder(voc)
    assert again.layout == "voc" and again.class_names == list(VOC_CLASSES)
    assert {s.stem: s.tags for s in again.samples} == {"2007_000001": ["dog", "person"], "2007_000002": ["cat", "sofa"]}
    assert again.samples[0].gt_mask is not None
    assert [s.stem for s in open_folder(voc, split="train").samples] == ["2007_000001"]


def test_voc_with_custom_names_uses_sorted_names(tmp_path: Path) -> None:
    write_image(tmp_path / "JPEGImages" / "a.jpg")
    write_text(tmp_path / "Annotations" / "a.xml", voc_xml(["helmet", "head"]))
    folder = open_folder(tmp_path)
    assert folder.class_names == ["head", "helmet"]
    assert any("not the 20 VOC classes" in p for p in folder.problems)


def test_voc_unreadable_annotation_is_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "JPEGImages" / "a.jpg")
    write_image(tmp_path / "JPEGImages" / "b.jpg")
    write_text(tmp_path / "Annotations" / "a.xml", voc_xml(["dog"]))
    write_text(tmp_path / "Annotations" / "b.xml", "<annotation><object>")
    folder = open_folder(tmp_path)
    assert [s.stem for s in folder.samples] == ["a"]
    assert any("b.xml" in p and "unreadable annotation" in p for p in folder.problems)


def test_subfolder_layout_and_conversion_to_native(tmp_path: Path) -> None:
    write_image(tmp_path / "dog" / "d1.jpg")
    write_image(tmp_path / "dog" / "d2.png")
    write_image(tmp_path / "cat" / "c1.jpg")
    write_image(tmp_path / "empty_dir" / "deeper" / "ignored.jpg")
    folder = open_folder(tmp_path)
    assert folder.layout == "subfolders" and detect_layout(tmp_path) == "subfolders"
    assert folder.class_names == ["cat", "dog"]
    assert {s.stem: s.tags for s in folder.samples} == {"c1": ["cat"], "d1": ["dog"], "d2": ["dog"]}
    assert not (tmp_path / "tags.csv").exists()  # nothing is written unless asked
    folder.set_tags("d1", ["dog", "cat"])
    folder.save_tags()
    native = open_folder(tmp_path)
    assert native.layout == "native" and native.class_names == ["cat", "dog"]
    assert {s.stem: s.tags for s in native.samples} == {"c1": ["cat"], "d1": ["dog", "cat"], "d2": ["dog"]}


def test_subfolders_missing_from_classes_file(tmp_path: Path) -> None:
    write_image(tmp_path / "dog" / "d1.jpg")
    write_image(tmp_path / "cat" / "c1.jpg")
    write_text(tmp_path / "classes.txt", "dog\n")
    with pytest.raises(FolderError, match=r"classes\.txt.*cat"):
        open_folder(tmp_path)


def test_folder_of_untagged_images_opens_for_tagging(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    folder = open_folder(tmp_path)
    assert folder.layout == "native" and folder.samples == [] and folder.untagged == ["a.jpg"]


def test_split_on_non_voc_folder(native: Path) -> None:
    with pytest.raises(FolderError, match="only supported for PASCAL VOC"):
        open_folder(native, split="train")


def test_save_tags_keeps_rows_of_dropped_images(tmp_path: Path) -> None:
    write_image(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    write_text(tmp_path / "tags.csv", "image,tags\ngood.png,a\nbroken.png,b\n")
    folder = open_folder(tmp_path)
    assert validate_images(folder) and [s.rel for s in folder.samples] == ["good.png"]
    folder.set_tags("good", ["c"])
    folder.save_tags()
    assert (tmp_path / "tags.csv").read_text(encoding="utf-8") == "image,tags\ngood.png,c\nbroken.png,b\n"


def test_invalid_tag_changes_nothing(native: Path) -> None:
    folder = open_folder(native)
    with pytest.raises(ValueError, match="invalid class name"):
        folder.set_tags("a/untagged.png", ["fine", "not;fine"])
    assert folder.class_names == ["dog", "cat"] and folder.untagged == ["a/untagged.png"]


def test_voc_split_folder_cannot_save_tags(voc: Path) -> None:
    with pytest.raises(FolderError, match="without a split"):
        open_folder(voc, split="train").save_tags()
    assert not (voc / "tags.csv").exists()


def test_relative_root_gives_absolute_paths(native: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(native.parent)
    folder = open_folder(native.name)
    assert folder.root == native and folder.samples[0].image_path.is_absolute()


def test_nested_images_use_their_file_stem_for_masks(tmp_path: Path) -> None:
    """The common ``images/`` + ``masks/`` layout: masks named after the file, whatever its folder."""
    for name in ("x", "y", "z"):
        write_image(tmp_path / "images" / f"{name}.jpg")
    write_image(tmp_path / "images" / "more" / "w.jpg")
    write_text(tmp_path / "tags.csv", "image,tags\nimages/x.jpg,cat\nimages/y.jpg,cat\nimages/more/w.jpg,cat\n")
    for name in ("x", "y", "w"):
        save_palette_png(tmp_path / "masks" / f"{name}.png", np.ones((16, 24), np.uint8))
    save_palette_png(tmp_path / "verified" / "x.png", np.ones((16, 24), np.uint8))
    save_palette_png(tmp_path / "verified" / "images__x.png", np.zeros((16, 24), np.uint8))  # old name, older
    save_palette_png(tmp_path / "verified" / "images__y.png", np.zeros((16, 24), np.uint8))  # old name only
    folder = open_folder(tmp_path)
    by_stem = {s.stem: s for s in folder.samples}
    assert set(by_stem) == {"x", "y", "w"} and folder.problems == []
    assert all(s.gt_mask == tmp_path / "masks" / f"{s.stem}.png" for s in folder.samples)
    assert by_stem["x"].verified_mask == tmp_path / "verified" / "x.png"  # the new name wins
    assert by_stem["y"].verified_mask == tmp_path / "verified" / "images__y.png"  # the old name is still read
    assert folder.verified_path(by_stem["y"]) == tmp_path / "verified" / "y.png"  # and replaced by the new one
    assert by_stem["w"].verified_mask is None
    assert folder.stem_of("images/z.jpg") == "z"  # untagged images have a stem too ...
    assert folder.set_tags("images/z.jpg", ["cat"]).stem == "z"  # ... which they keep once tagged


def test_colliding_file_stems_use_path_stems_and_are_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "img.jpg")
    write_image(tmp_path / "b" / "img.png")
    write_image(tmp_path / "c" / "IMG.jpg")  # one file on Windows and macOS: collides too
    write_image(tmp_path / "c" / "solo.jpg")
    write_text(tmp_path / "tags.csv", "image,tags\na/img.jpg,cat\nb/img.png,cat\nc/IMG.jpg,cat\nc/solo.jpg,cat\n")
    save_palette_png(tmp_path / "masks" / "a__img.png", np.ones((16, 24), np.uint8))
    save_palette_png(tmp_path / "masks" / "solo.png", np.ones((16, 24), np.uint8))
    folder = open_folder(tmp_path)
    by_stem = {s.stem: s for s in folder.samples}
    assert set(by_stem) == {"a__img", "b__img", "c__IMG", "solo"}
    assert by_stem["a__img"].gt_mask == tmp_path / "masks" / "a__img.png" and by_stem["b__img"].gt_mask is None
    assert len(folder.problems) == 3 and all(p.kind == "stem collision" for p in folder.problems)
    first = next(p for p in folder.problems if p.startswith(str(tmp_path / "a" / "img.jpg")))
    assert "b/img.png" in first and "c/IMG.jpg" in first and "masks/a__img.png" in first


def test_masks_folder_that_matches_no_image_is_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "x.jpg")
    write_text(tmp_path / "tags.csv", "image,tags\nimages/x.jpg,cat\n")
    save_palette_png(tmp_path / "masks" / "images_x.png", np.ones((16, 24), np.uint8))
    folder = open_folder(tmp_path)
    assert folder.samples[0].gt_mask is None
    assert len(folder.problems) == 1 and folder.problems[0].kind == "unmatched masks"
    assert "0 of the 1 expected" in folder.problems[0] and "expects masks/x.png" in folder.problems[0]
    assert "images_x.png" in folder.problems[0]


def test_problem_kinds_survive_pickling_and_are_summarised(tmp_path: Path) -> None:
    import pickle

    write_image(tmp_path / "a.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    write_text(tmp_path / "tags.csv", "image,tags\na.jpg,cat\na.jpg,cat\ngone.jpg,cat\nbroken.jpg,cat\n")
    folder = open_folder(tmp_path)
    validate_images(folder)
    kinds = sorted(p.kind for p in folder.problems)
    assert kinds == ["duplicate row", "missing file", "unreadable image"]
    assert [p.kind for p in pickle.loads(pickle.dumps(folder.problems))] == [p.kind for p in folder.problems]
    lines = summarise_problems(folder.problems + ["plain line from the predictor"], examples=1)
    assert "  unreadable image: 2" in lines and "    ... and 1 more" in lines
    assert "  missing file: 1" in lines and any("gone.jpg" in line for line in lines)


REAL_MIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-dev" / "mix"


@pytest.mark.skipif(not (REAL_MIX / "tags.csv").is_file(), reason=f"{REAL_MIX} is not on this machine")
def test_real_images_masks_layout_finds_every_ground_truth() -> None:
    """``images/<name>.jpg`` + ``masks/<name>.png`` + ``tags.csv`` (read in place, never copied)."""
    folder = open_folder(REAL_MIX)
    assert len(folder.samples) == 180 and folder.problems == []
    assert all(s.gt_mask == REAL_MIX / "masks" / f"{s.stem}.png" for s in folder.samples)
