"""Class names -> ImageNet classes through WordNet, and priors.yaml (explicit choices, clear errors)."""
from __future__ import annotations

import json

import pytest
import torch

from oste_core.data.priors import PriorsError, class_priors, read_priors, write_priors
from oste_core.models.modules.imagenet_names import IMAGENET_CLASSES, TABLE, imagenet_wordnet, match_names
from oste_core.models.modules.imagenet_prior import ImagenetPrior


def names(classes: tuple[int, ...]) -> set[str]:
    table = imagenet_wordnet()
    return {table.class_names[c].split(", ")[0] for c in classes}


def test_the_table_names_its_source_and_licence_and_holds_the_1000_classes_in_order():
    table = json.loads(TABLE.read_text())
    assert "WordNet 3.0" in table["source"] and "Princeton University" in table["licence"]
    assert len(table["classes"]) == 1000 and table["classes"] == sorted(table["classes"])
    class_names = imagenet_wordnet().class_names
    assert class_names[0].startswith("tench") and class_names[281].startswith("tabby")
    assert class_names[817].startswith("sports car") and class_names[999].startswith("toilet tissue")


@pytest.mark.parametrize("name", ["forklift", "Forklifts", "laptop", "laptop computer", "zebra", "zebras",
                                  "sports car", "Sports Car", "sports_cars", "sports-car"])
def test_imagenet_class_names_in_any_spelling_or_plural_match_their_class(name):
    match = imagenet_wordnet().match(name)
    assert len(match.classes) == 1 and match.how.startswith("WordNet")
    assert names(match.classes) <= {"forklift", "laptop", "zebra", "sports car"}


def test_general_names_get_every_imagenet_class_below_them():
    table = imagenet_wordnet()
    assert "sports car" in names(table.match("vehicle").classes) and "airliner" in names(table.match("vehicle").classes)
    assert {"strawberry", "orange", "banana"} <= names(table.match("fruit").classes)
    assert table.match("hounds").classes and names(table.match("hound").classes) >= {"beagle", "basset"}
    assert names(table.match("mice").classes) == names(table.match("mouse").classes) != set()  # irregular plural
    assert table.match("object").classes == ()  # above nearly all of ImageNet: no prior
    assert "too general" in table.match("object").how


def test_synonyms_and_hyponyms_of_voc_classes_get_the_voc_table():
    table = imagenet_wordnet()
    assert table.match("automobile").classes == IMAGENET_CLASSES["car"]  # a synonym of car
    assert table.match("puppy").classes == IMAGENET_CLASSES["dog"]  # a young dog: a kind of dog
    assert table.match("puppies").classes == IMAGENET_CLASSES["dog"]
    assert table.match("kitten").classes == IMAGENET_CLASSES["cat"]  # "young domestic cat"
    assert table.match("kitty").classes == IMAGENET_CLASSES["cat"]
    assert table.match("Dog").how == "VOC table" and table.match("TV/Monitor").classes == IMAGENET_CLASSES["tvmonitor"]
    assert table.match("person").classes == ()  # the VOC table's choice: none


@pytest.mark.parametrize("name", ["widget", "qwerty", "star", "ring", "square", "circle shape", ""])
def test_names_without_an_imagenet_concept_match_nothing(name):
    match = imagenet_wordnet().match(name)
    assert match.classes == () and match.how.startswith("no match")


def test_the_prior_is_built_from_the_matched_names_and_explicit_choices_win():
    classifier = (torch.zeros(1000, 8), torch.zeros(1000))
    prior = ImagenetPrior.for_classes(["kitty", "forklift", "widget", "person"], classifier)
    assert prior.classes == {1: IMAGENET_CLASSES["cat"], 2: imagenet_wordnet().match("forklift").classes}
    explicit = ImagenetPrior.for_classes(["kitty", "forklift"], classifier, {"kitty": (281,), "forklift": ()})
    assert explicit.classes == {1: (281,)}
    assert ImagenetPrior.for_classes(["widget"], classifier) is None


def test_image_votes_sum_the_imagenet_softmax_over_each_class(tmp_path):
    weight = torch.zeros(1000, 8)
    weight[list(IMAGENET_CLASSES["dog"]), 0] = 4.0
    prior = ImagenetPrior.for_classes(["dog", "kitty"], (weight, torch.zeros(1000)))
    stage = torch.zeros(8, 3, 3)
    stage[0] = 2.0  # the image looks like a dog to ImageNet's classifier
    votes = prior.image_votes(stage)
    assert set(votes) == {1, 2} and votes[1] > 0.9 and votes[2] < 0.01


def test_priors_yaml_names_indices_general_names_and_none(tmp_path):
    (tmp_path / "priors.yaml").write_text("kitty: [tabby, tiger cat, 285]\ntruck: vehicle\nperson: none\nzebra: null\n")
    chosen = read_priors(tmp_path, ["kitty", "truck", "person", "zebra", "dog"])
    assert chosen["kitty"] == (281, 282, 285)
    assert chosen["truck"] == imagenet_wordnet().lookup("vehicle") and len(chosen["truck"]) > 20
    assert chosen["person"] == () and chosen["zebra"] == ()
    matches = {m.name: m for m in class_priors(tmp_path, ["kitty", "truck", "person", "zebra", "dog"])}
    assert matches["kitty"].how == "priors.yaml" and matches["dog"].how == "VOC table"
    assert read_priors(tmp_path / "nowhere", ["a"]) == {}


def test_priors_yaml_written_by_the_app_reads_back_the_same(tmp_path):
    path = write_priors(tmp_path, {"kitty": (281, 285), "sports car": (), "dog": (151,)})
    assert "# tabby" in path.read_text()
    assert read_priors(tmp_path, ["kitty", "sports car", "dog"]) == {"kitty": (281, 285), "sports car": (), "dog": (151,)}


@pytest.mark.parametrize("text, expected", [
    ("kitty: [tabby\n", "line 2: not valid YAML"),
    ("- tabby\n", "line 1: expected 'class: [ImageNet classes]'"),
    ("kitty: [tabby]\nhorse: [sorrel]\n", "line 2: 'horse' is not a class of this folder"),
    ("kitty: [tabby]\nkitty: [285]\n", "line 2: class 'kitty' is listed twice"),
    ("kitty: [tabby]\ndog: [1000]\n", "line 2: class 'dog': ImageNet index 1000 is out of range (0..999)"),
    ("dog: [fluffy thing]\n", "line 1: class 'dog': 'fluffy thing' is not an ImageNet class"),
    ("dog: {a: b}\n", "line 1: class 'dog': expected a list"),
    ("dog: [[tabby]]\n", "line 1: class 'dog': each entry must be one ImageNet class name or index"),
])
def test_priors_yaml_errors_name_the_file_the_line_the_class_and_the_problem(tmp_path, text, expected):
    (tmp_path / "priors.yaml").write_text(text)
    with pytest.raises(PriorsError) as error:
        read_priors(tmp_path, ["kitty", "dog"])
    assert str(error.value).startswith(str(tmp_path / "priors.yaml") + ": ")
    assert expected in str(error.value)


def test_match_names_keeps_the_class_order():
    assert [m.name for m in match_names(["zebra", "widget", "dog"])] == ["zebra", "widget", "dog"]
