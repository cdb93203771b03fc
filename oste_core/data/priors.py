"""``priors.yaml``: which ImageNet classes each class of a folder means, chosen by the user.

Optional, beside ``classes.txt``. One entry per class; a class without an entry keeps the prior its name
matches (``imagenet_names.py``)::

    kitty: [tabby, tiger cat, 285]     # ImageNet class names or indices 0..999
    truck: vehicle                     # any WordNet name: every ImageNet class below it
    person: none                       # no prior (also: null, [])

Errors (`PriorsError`) name the file, the line, the class and the problem.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from oste_core.data.problems import FolderError
from oste_core.models.modules.imagenet_names import NameMatch, imagenet_wordnet, match_names
from oste_core.utils.io import atomic_write_text

PRIORS_FILE = "priors.yaml"
NONE_WORDS = frozenset({"none", "no", "off"})


class PriorsError(FolderError):
    """``priors.yaml`` cannot be used; the message names the file, the line, the class and the problem."""


def read_priors(root: str | Path, class_names: list[str]) -> dict[str, tuple[int, ...]]:
    """The explicit choices of ``root/priors.yaml`` (class -> ImageNet indices, () = no prior); {} without it."""
    path = Path(root) / PRIORS_FILE
    if not path.is_file():
        return {}
    try:
        node = yaml.compose(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PriorsError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise PriorsError(f"{path}: {where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise PriorsError(f"{path}: line {node.start_mark.line + 1}: expected 'class: [ImageNet classes]' lines")
    chosen: dict[str, tuple[int, ...]] = {}
    for key, value in node.value:
        line = f"{path}: line {key.start_mark.line + 1}"
        name = str(key.value).strip()
        if name not in class_names:
            raise PriorsError(f"{line}: '{name}' is not a class of this folder (classes: {', '.join(class_names)})")
        if name in chosen:
            raise PriorsError(f"{line}: class '{name}' is listed twice")
        chosen[name] = _entries(value, f"{line}: class '{name}'")
    return chosen


def _entries(node: yaml.Node, where: str) -> tuple[int, ...]:
    """The ImageNet indices of one class's value: a name, an index, a list of them, or none."""
    if isinstance(node, yaml.ScalarNode):
        items = [] if node.tag.endswith(":null") or str(node.value).strip().lower() in NONE_WORDS else [node]
    elif isinstance(node, yaml.SequenceNode):
        items = node.value
    else:
        raise PriorsError(f"{where}: expected a list of ImageNet class names or indices, or none")
    table = imagenet_wordnet()
    found: list[int] = []
    for item in items:
        if not isinstance(item, yaml.ScalarNode):
            raise PriorsError(f"{where}: each entry must be one ImageNet class name or index, not a list or mapping")
        text = str(item.value).strip()
        if item.tag.endswith(":int"):
            index = int(text)
            if not 0 <= index < 1000:
                raise PriorsError(f"{where}: ImageNet index {index} is out of range (0..999)")
            classes: tuple[int, ...] = (index,)
        else:
            classes = table.lookup(text)
            if not classes:
                raise PriorsError(f"{where}: '{text}' is not an ImageNet class nor a WordNet name above one "
                                  "(see `oste info DATA` or the Tags panel's ImageNet list)")
        found.extend(c for c in classes if c not in found)
    return tuple(sorted(found))


def write_priors(root: str | Path, chosen: dict[str, tuple[int, ...]]) -> Path:
    """Write ``root/priors.yaml`` from class -> ImageNet indices (each written as its index and a comment)."""
    names = imagenet_wordnet().class_names
    lines = ["# what ImageNet calls each class: ImageNet class names or indices 0..999, or none (see README)"]
    for name, classes in chosen.items():
        if not classes:
            lines.append(f"{yaml.safe_dump(name).splitlines()[0]}: none")
            continue
        lines.append(f"{yaml.safe_dump(name).splitlines()[0]}:")
        lines += [f"  - {index}  # {names[index]}" for index in classes]
    path = Path(root) / PRIORS_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def class_priors(root: str | Path, class_names: list[str]) -> list[NameMatch]:
    """Each class's ImageNet classes and where they come from: priors.yaml, the VOC table or WordNet."""
    return match_names(class_names, read_priors(root, class_names))
