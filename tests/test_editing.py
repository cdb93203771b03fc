"""Qt-free mask editing: brush/eraser/fills, grouped undo/redo with bbox patches, verified saves."""
from __future__ import annotations

import os

import numpy as np
import pytest

from oste_core.editing import (
    CorrectionsConflict,
    MaskDocument,
    VerifiedMaskConflict,
    with_corrections,
    open_document,
    review_order,
    save_verified,
    similar_color_region,
    uncertainty_score,
    verified_path,
)
from oste_core.labels import UNSURE
from oste_core.suggest.corrections import corrections_path, load_corrections


def blank(h: int = 32, w: int = 40) -> MaskDocument:
    return MaskDocument(np.zeros((h, w), np.uint8), "img")


def test_brush_paints_a_round_stroke_along_the_segment() -> None:
    doc = blank()
    assert doc.brush([(5, 10), (25, 10)], radius=2, value=3)
    painted = doc.mask == 3
    assert painted[10, 5:26].all()  # the whole segment
    assert painted[8:13, 15].all() and not painted[7, 15] and not painted[13, 15]  # width 2r+1
    assert painted[10, 3] and not painted[10, 2]  # round cap of radius 2 at the end point
    assert doc.dirty and doc.can_undo


def test_brush_is_clipped_at_the_border_and_ignores_empty_input() -> None:
    doc = blank(10, 10)
    assert doc.brush([(-3, -3), (0, 0)], radius=2, value=1)
    assert doc.mask[0, 0] == 1 and doc.mask[9, 9] == 0
    assert not doc.brush([], radius=2, value=1)
    assert not doc.brush([(50, 50)], radius=1, value=1)  # entirely outside
    with pytest.raises(ValueError, match="0..255"):
        doc.brush([(1, 1)], 1, 256)


def test_eraser_paints_background() -> None:
    doc = MaskDocument(np.full((16, 16), 2, np.uint8), "img")
    doc.erase([(8, 8)], radius=1)
    assert doc.mask[8, 8] == 0 and doc.mask[8, 9] == 0 and doc.mask[0, 0] == 2


def test_flood_fill_is_four_connected_on_equal_values() -> None:
    mask = np.zeros((9, 9), np.uint8)
    mask[4, :] = 1  # a wall splitting top and bottom
    mask[2, 2] = 1  # an island that touches nothing
    doc = MaskDocument(mask, "img")
    assert doc.flood_fill(0, 0, 5)
    assert (doc.mask[:4][mask[:4] == 0] == 5).all()
    assert doc.mask[2, 2] == 1 and (doc.mask[5:] == 0).all() and (doc.mask[4] == 1).all()
    # diagonal neighbours are not connected (4-connectivity)
    diag = np.zeros((3, 3), np.uint8)
    diag[0, 0] = diag[1, 1] = 1
    d = MaskDocument(diag, "d")
    d.flood_fill(0, 0, 7)
    assert d.mask[0, 0] == 7 and d.mask[1, 1] == 1
    assert not d.flood_fill(0, 0, 7)  # same value: nothing changes, no undo step
    assert not d.flood_fill(10, 10, 3)


def test_polygon_fill_fills_the_inside() -> None:
    doc = blank(20, 20)
    assert doc.polygon_fill([(2, 2), (12, 2), (12, 12), (2, 12)], UNSURE)
    assert (doc.mask[2:13, 2:13] == UNSURE).all()
    assert doc.mask[1, 1] == 0 and doc.mask[13, 13] == 0
    assert not doc.polygon_fill([(1, 1), (3, 3)], 1)  # two points are no polygon


def test_undo_redo_restore_exact_states_and_strokes_are_one_step() -> None:
    doc = blank()
    states = [doc.mask.copy()]
    doc.begin_stroke()
    for x in range(5, 30, 5):  # one mouse drag = several segments
        doc.brush([(x - 5, 8), (x, 8)], radius=1, value=1)
    doc.end_stroke()
    states.append(doc.mask.copy())
    doc.flood_fill(0, 31, 2)
    states.append(doc.mask.copy())
    doc.set_all(np.full(doc.shape, 4, np.uint8))
    states.append(doc.mask.copy())

    for expected in reversed(states[:-1]):
        assert doc.undo()
        np.testing.assert_array_equal(doc.mask, expected)
    assert not doc.undo() and not doc.can_undo
    for expected in states[1:]:
        assert doc.redo()
        np.testing.assert_array_equal(doc.mask, expected)
    assert not doc.redo()
    doc.undo()
    doc.brush([(1, 1)], 0, 9)  # a new edit clears the redo stack
    assert not doc.can_redo


def test_undo_patches_keep_only_the_changed_box() -> None:
    doc = blank(200, 200)
    doc.brush([(100, 100)], radius=3, value=1)
    (patch,) = doc._undo[-1]
    assert patch.before.shape == (7, 7) and (patch.y0, patch.x0) == (97, 97)


def test_set_all_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="img: new mask has shape"):
        blank().set_all(np.zeros((3, 3), np.uint8))


def test_save_verified_writes_values_and_refuses_to_clobber_changes(tmp_path) -> None:
    from oste_core.data import load_mask

    doc = MaskDocument(np.zeros((12, 16), np.uint8), "cat_01")  # a full mask, no verified file yet
    doc.brush([(4, 4)], 2, 1)
    doc.polygon_fill([(10, 2), (15, 2), (15, 8)], UNSURE)
    path = doc.save(tmp_path)
    assert path == verified_path(tmp_path, "cat_01") and not doc.dirty
    np.testing.assert_array_equal(load_mask(path), doc.mask)
    assert not any(p.name.endswith(".tmp.png") for p in path.parent.iterdir())

    reopened = open_document(tmp_path, "cat_01", (12, 16))
    np.testing.assert_array_equal(reopened.mask, doc.mask)

    # someone else rewrites the file: saving the stale document must not silently overwrite it
    other = np.full((12, 16), 2, np.uint8)
    save_verified(tmp_path, "cat_01", other, doc.disk_mtime_ns)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    doc.brush([(1, 1)], 0, 1)
    with pytest.raises(VerifiedMaskConflict, match="cat_01.png: the verified mask was changed"):
        doc.save(tmp_path)
    assert doc.dirty
    np.testing.assert_array_equal(load_mask(path), other)
    doc.save(tmp_path, force=True)
    np.testing.assert_array_equal(load_mask(path), doc.mask)

    fresh = MaskDocument(np.zeros((12, 16), np.uint8), "cat_01")  # believed there was no file
    with pytest.raises(VerifiedMaskConflict, match="was created"):
        fresh.save(tmp_path)
    with pytest.raises(VerifiedMaskConflict, match="was created"):
        save_verified(tmp_path, "cat_01", fresh.mask)  # the default: there must be no file yet
    path.unlink()
    with pytest.raises(VerifiedMaskConflict, match="was deleted"):
        doc.save(tmp_path)


def test_uncertainty_and_review_order() -> None:
    labels = np.zeros((4, 5), np.uint8)
    labels[0, :] = UNSURE
    assert uncertainty_score(labels) == pytest.approx(0.25)
    assert uncertainty_score(np.zeros((0, 0), np.uint8)) == 0.0
    assert review_order([("a", 0.1), ("b", 0.5), ("c", 0.1)]) == ["b", "a", "c"]


def two_tone_image() -> np.ndarray:
    """A noisy grey image with a noisy red disc at (20, 16), radius 8, and a red square elsewhere."""
    rng = np.random.default_rng(0)
    image = np.full((32, 40, 3), 120, np.int16) + rng.integers(-6, 7, (32, 40, 3))
    rows, cols = np.mgrid[:32, :40]
    image[(rows - 16) ** 2 + (cols - 20) ** 2 <= 64] = (200, 40, 40)
    image[2:6, 33:38] = (200, 40, 40)  # same colour, not connected to the disc
    return np.clip(image, 0, 255).astype(np.uint8)


def test_colour_fill_takes_the_connected_similar_region_only() -> None:
    image = two_tone_image()
    rows, cols = np.mgrid[:32, :40]
    disc = (rows - 16) ** 2 + (cols - 20) ** 2 <= 64
    inner = (rows - 16) ** 2 + (cols - 20) ** 2 <= 36  # the disc without its (smoothed) rim
    doc = blank()
    assert doc.color_fill(image, 20, 16, 2, tolerance=24)
    filled = doc.mask == 2
    assert filled[inner].all() and not filled[~disc].any()  # the square of the same colour is not connected
    assert doc.undo() and not doc.mask.any()  # one undoable step

    grey = similar_color_region(image, 2, 30, tolerance=24)
    assert not grey[disc].any() and not grey[2:6, 33:38].any() and grey.sum() > 0.9 * (~disc).sum() - 20
    assert similar_color_region(image, 2, 30, tolerance=0).sum() < grey.sum()  # tolerance matters


def test_colour_fill_stays_inside_the_clicked_label() -> None:
    image = two_tone_image()
    doc = blank()
    doc.brush([(20, 16)], radius=3, value=5)  # an object already labelled inside the disc
    doc.color_fill(image, 14, 16, 1, tolerance=24)
    assert doc.mask[16, 20] == 5 and doc.mask[16, 14] == 1 and doc.mask[0, 0] == 0
    assert not doc.color_fill(image, 20, 16, 5)  # filling a label with itself changes nothing
    with pytest.raises(ValueError):
        doc.color_fill(image[..., 0], 1, 1, 1)


def test_a_verified_mask_under_its_older_name_opens_and_saves_under_the_current_name(tmp_path):
    from oste_core.data import load_mask
    from oste_core.export.palette import save_palette_png

    older = tmp_path / "verified" / "images__cat.png"
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:6] = 3
    save_palette_png(older, mask)
    doc = open_document(tmp_path, "cat", (6, 8), older_file=older)
    assert (doc.mask == mask).all()
    doc.save(tmp_path)
    assert (load_mask(verified_path(tmp_path, "cat")) == mask).all() and older.exists()


def test_an_unverified_image_opens_as_a_corrections_document_saved_at_each_change(tmp_path) -> None:
    doc = open_document(tmp_path, "dog", (12, 16))
    assert doc.sparse and (doc.mask == UNSURE).all() and doc.corrections_mtime_ns is None
    doc.brush([(4, 4)], 1, 2)
    doc.erase([(12, 8)], 1)  # the eraser labels background
    path = doc.save(tmp_path)
    assert path == corrections_path(tmp_path, "dog") and not doc.dirty
    assert not (tmp_path / "verified").exists()
    saved = load_corrections(tmp_path, "dog", (12, 16))
    np.testing.assert_array_equal(saved, doc.mask)
    assert saved[4, 4] == 2 and saved[8, 12] == 0 and saved[0, 15] == UNSURE

    reopened = open_document(tmp_path, "dog", (12, 16))
    assert reopened.sparse and reopened.corrections_mtime_ns == path.stat().st_mtime_ns
    np.testing.assert_array_equal(reopened.mask, doc.mask)

    doc.brush([(4, 4)], 1, UNSURE)  # the unsure brush removes a correction
    assert doc.undo() and doc.undo() and doc.undo() and (doc.mask == UNSURE).all()
    assert doc.save(tmp_path) is None and not path.exists()  # no correction left: no file
    assert doc.redo() and doc.save(tmp_path) == path

    # someone else rewrites the file: a stale document asks before overwriting it
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    doc.brush([(1, 1)], 0, 1)
    with pytest.raises(CorrectionsConflict, match="dog.png: the corrections file was changed"):
        doc.save(tmp_path)
    assert doc.dirty and doc.save(tmp_path, force=True) == path and load_corrections(tmp_path, "dog")[1, 1] == 1


def test_fills_of_a_corrections_document_follow_the_suggestion_shown() -> None:
    suggestion = np.zeros((10, 12), np.uint8)
    suggestion[2:6, 2:8] = 1  # the suggested object
    doc = MaskDocument(np.full((10, 12), UNSURE, np.uint8), "img", sparse=True)
    assert doc.flood_fill(3, 3, 4, suggestion=suggestion)
    assert (doc.mask[2:6, 2:8] == 4).all() and (doc.mask[suggestion == 0] == UNSURE).all()
    assert not doc.flood_fill(3, 3, 4, suggestion=suggestion)  # already shown with that class
    doc.brush([(10, 8)], 0, 0)
    np.testing.assert_array_equal(doc.shown(suggestion), with_corrections(suggestion, doc.mask))
    assert doc.shown(suggestion)[8, 10] == 0 and doc.shown(suggestion)[3, 3] == 4 and doc.shown()[0, 0] == UNSURE


def test_accepting_turns_a_corrections_document_into_a_full_mask_in_one_undoable_step() -> None:
    doc = MaskDocument(np.full((6, 8), UNSURE, np.uint8), "img", sparse=True)
    doc.brush([(2, 2)], 0, 3)
    strokes = doc.mask.copy()
    full = with_corrections(np.ones((6, 8), np.uint8), strokes)
    assert doc.set_all(full, sparse=False)
    assert not doc.sparse and doc.mask[2, 2] == 3 and doc.mask[0, 0] == 1
    assert doc.undo() and doc.sparse
    np.testing.assert_array_equal(doc.mask, strokes)
    assert doc.redo() and not doc.sparse
    np.testing.assert_array_equal(doc.mask, full)
    blank_doc = MaskDocument(np.full((6, 8), UNSURE, np.uint8), "b", sparse=True)
    assert blank_doc.set_all(blank_doc.mask.copy(), sparse=False) and not blank_doc.sparse  # same pixels
    assert blank_doc.undo() and blank_doc.sparse
