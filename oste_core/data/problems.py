"""What can be wrong with a labelled folder: `FolderError` when it cannot be used, `Problem` lines (each with
a kind) for what does not stop it, and `summarise_problems` to count them per kind."""
from __future__ import annotations

from typing import Sequence


class FolderError(ValueError):
    """The folder cannot be used; the message names the folder or file and the problem."""


MISSING_FILE = "missing file"
DUPLICATE_ROW = "duplicate row"
BAD_ROW = "bad row"
STEM_COLLISION = "stem collision"
UNMATCHED_MASKS = "unmatched masks"
UNREADABLE_IMAGE = "unreadable image"
UNREADABLE_MASK = "unreadable mask"
UNREADABLE_ANNOTATION = "unreadable annotation"
CLASS_ORDER = "class order"


class Problem(str):
    """A ``"path: reason"`` problem line that also says which ``kind`` of problem it is.

    A `str`, so problem lists stay plain text for files and the GUI; the kind lets a summary
    count problems per kind (`summarise_problems`).
    """

    kind: str

    def __new__(cls, text: str, kind: str) -> "Problem":
        line = super().__new__(cls, text)
        line.kind = kind
        return line

    def __getnewargs__(self) -> tuple[str, str]:  # pickling (DataLoader workers) keeps the kind
        return str(self), self.kind


def problem_kind(problem: str) -> str:
    """The kind of a problem line: its `Problem.kind`, "unreadable image" for plain lines (from
    the predictor and the dataset, which only report images they could not read)."""
    return getattr(problem, "kind", UNREADABLE_IMAGE)


def summarise_problems(problems: Sequence[str], examples: int = 3) -> list[str]:
    """Console lines: per kind (most frequent first) the count and the first ``examples`` lines."""
    by_kind: dict[str, list[str]] = {}
    for problem in problems:
        by_kind.setdefault(problem_kind(problem), []).append(str(problem))
    lines: list[str] = []
    for kind, found in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        lines.append(f"  {kind}: {len(found)}")
        lines += [f"    {line}" for line in found[:examples]]
        if len(found) > examples:
            lines.append(f"    ... and {len(found) - examples} more")
    return lines
