"""Untagged images against background-only ones, suggested tags (made, saved, read back, accepted), `oste tags`."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import tiny_config

from oste_core.cli import main
from oste_core.data import open_folder
from oste_core.engine.tag_suggestions import (SUGGESTIONS_FILE, SuggestedTag, TagSuggester, accept, load_suggestions,
                                              save_suggestions, suggested_names, uncertainty)
from oste_core.engine.trainer import Trainer

FAST = {"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0, "train.iters": 2}


def tag_rows(path: Path) -> dict[str, str]:
    with open(path, newline="") as handle:
        return {row["image"]: row["tags"] for row in csv.DictReader(handle)}


def write_rows(path: Path, rows: dict[str, str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "tags"])
        writer.writerows(rows.items())


@pytest.fixture
def half_tagged(demo_folder, tmp_path) -> Path:
    """The demo folder with circle/square renamed car/dog (ImageNet knows them, priors.yaml dropped), one image
    background only, one marked '?' and two without a row."""
    data = Path(shutil.copytree(demo_folder, tmp_path / "data"))
    (data / "priors.yaml").unlink()
    for name in ("classes.txt", "tags.csv"):
        (data / name).write_text((data / name).read_text().replace("circle", "car").replace("square", "dog"))
    rows = tag_rows(data / "tags.csv")
    rels = sorted(rows)
    rows[rels[0]] = ""  # tagged: background only
    rows[rels[1]] = "?"  # not tagged yet, explicitly
    del rows[rels[2]], rows[rels[3]]  # not tagged yet: no row (as older folders)
    write_rows(data / "tags.csv", rows)
    return data


def test_untagged_images_are_not_background_only_and_keep_their_state_when_saved(half_tagged):
    folder = open_folder(half_tagged)
    rels = sorted(tag_rows(half_tagged / "tags.csv"))
    all_rels = sorted(folder.stems)
    assert folder.find(all_rels[0]).tags == []  # an empty cell: background only, used for training
    assert sorted(folder.untagged) == [all_rels[1], all_rels[2], all_rels[3]]
    assert len(folder.samples) == len(all_rels) - 3 and all_rels[1] in rels
    folder.save_tags()
    saved = tag_rows(half_tagged / "tags.csv")
    assert saved[all_rels[0]] == "" and all(saved[rel] == "?" for rel in folder.untagged)
    again = open_folder(half_tagged)
    assert sorted(again.untagged) == sorted(folder.untagged) and len(again.samples) == len(folder.samples)
    again.set_tags(all_rels[2], [])  # the user says: background only
    again.save_tags()
    assert tag_rows(half_tagged / "tags.csv")[all_rels[2]] == "" and all_rels[2] not in open_folder(half_tagged).untagged
    with pytest.raises(ValueError, match="not '\\?'"):
        again.set_tags(all_rels[3], ["?"])


def test_a_training_suggests_the_tags_of_the_untagged_images_and_they_read_back_the_same(half_tagged, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(**FAST), half_tagged, run).run()
    folder = open_folder(half_tagged)
    stored = load_suggestions(run / SUGGESTIONS_FILE)
    assert sorted(stored) == sorted(folder.untagged)  # only the untagged images, never the trained ones
    for tags in stored.values():
        assert sorted(t.name for t in tags) == sorted(folder.class_names)
        assert all(0.0 <= t.probability <= 1.0 for t in tags)
        assert [t.probability for t in tags] == sorted((t.probability for t in tags), reverse=True)
        votes = {t.name: t.imagenet for t in tags}
        assert votes["car"] is not None and votes["dog"] is not None and votes["triangle"] is None
        for tag in tags:  # either vote can say the class is there
            assert tag.probability == (tag.classifier if tag.imagenet is None else max(tag.classifier, tag.imagenet))
    suggester = TagSuggester.from_run(run)
    rel = folder.untagged[0]
    fresh = suggester.suggest(half_tagged / rel)
    assert {t.name: round(t.probability, 3) for t in fresh} == pytest.approx(
        {t.name: t.probability for t in stored[rel]}, abs=2e-3)
    save_suggestions(tmp_path / "copy.csv", stored)
    assert load_suggestions(tmp_path / "copy.csv") == stored


def _tags(**probabilities: float) -> list[SuggestedTag]:
    return sorted((SuggestedTag(n, p, p) for n, p in probabilities.items()), key=lambda t: -t.probability)


def test_accept_tags_only_the_images_whose_suggestion_is_sure_and_leaves_the_others(half_tagged):
    folder = open_folder(half_tagged)
    sure, empty, unsure = sorted(folder.untagged)
    suggestions = {sure: _tags(car=0.97, dog=0.02, star=0.95), empty: _tags(car=0.03, dog=0.01),
                   unsure: _tags(car=0.96, dog=0.6)}
    assert suggested_names(suggestions[sure]) == ["car", "star"]
    assert uncertainty(suggestions[unsure]) > uncertainty(suggestions[sure])  # review order: unsure first
    done = accept(folder, suggestions, 0.9, rels=[sure, empty, unsure])
    assert done.tagged == {sure: ["car", "star"], empty: []} and done.left == [unsure]
    assert folder.untagged == [unsure]
    folder.save_tags()
    rows = tag_rows(half_tagged / "tags.csv")
    assert rows[sure] == "car;star" and rows[empty] == "" and rows[unsure] == "?"
    assert accept(folder, suggestions, 0.5).tagged == {unsure: ["car", "dog"]}  # at 0.5 every image is sure


def test_oste_tags_prints_accepts_and_writes_the_suggestions(half_tagged, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny_config(**FAST), half_tagged, run).run()
    (run / SUGGESTIONS_FILE).unlink()  # made again on demand
    untagged = sorted(open_folder(half_tagged).untagged)
    assert main(["tags", str(run), str(half_tagged), "--suggest", "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "3 not tagged yet" in out and all(f"{rel}: " in out for rel in untagged)
    assert sorted(load_suggestions(tmp_path / "s.csv")) == untagged and (run / SUGGESTIONS_FILE).is_file()
    assert main(["tags", str(run), str(half_tagged), "--suggest", "--accept-above", "0.5"]) == 0
    assert "accepted the suggestions of 3 images" in capsys.readouterr().out
    assert open_folder(half_tagged).untagged == []
    assert main(["tags", str(run), str(half_tagged), "--suggest", "--accept-above", "0.3"]) == 1
    assert "must be between 0.5 and 1" in capsys.readouterr().err


def test_oste_info_lists_each_class_with_its_prior_classes(half_tagged, capsys):
    (half_tagged / "priors.yaml").write_text("star: [starfish]\n")
    assert main(["info", str(half_tagged)]) == 0
    out = capsys.readouterr().out
    assert "car: 22 ImageNet classes (VOC table): ambulance" in out
    assert "star: 1 ImageNet classes (priors.yaml): starfish" in out
    assert "triangle: none (no match" in out
    (half_tagged / "priors.yaml").write_text("star: [starfish\n")
    assert main(["info", str(half_tagged)]) == 1
    assert "priors.yaml: line 2: not valid YAML" in capsys.readouterr().err
