"""`oste tags RUN DATA --suggest` and the class priors of `oste info DATA` (kept apart from cli.py).

``oste tags`` prints each untagged image's suggested tags in review order (most uncertain first), with
``--accept-above P`` tags the images whose suggestion is sure at P (`tag_suggestions.accept`) and saves
``tags.csv``, and with ``--out FILE`` writes all the probabilities as CSV.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oste_core.data import LabelledFolder

TAGS_EXAMPLES = """examples:
  oste tags runs/demo demo --suggest                      # print the suggested tags of the untagged images
  oste tags runs/demo demo --suggest --accept-above 0.9   # tag the sure ones, save tags.csv
  oste tags runs/demo demo --suggest --out suggested.csv
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tags", help="suggest the tags of the images not tagged yet, accept the sure ones",
                       epilog=TAGS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--suggest", action="store_true", help="suggest tags from the run (required for now)")
    p.add_argument("--accept-above", type=float, metavar="P",
                   help="tag each image whose classes are all >= P or <= 1 - P, and save tags.csv")
    p.add_argument("--out", type=Path, help="also write every probability as CSV (image,class,probability,...)")
    p.add_argument("--order", choices=("uncertain", "name"), default="uncertain",
                   help="print order: most uncertain first (default) or by image path")
    p.add_argument("--device", default="auto")


def run_suggestions(run: Path, folder: LabelledFolder, device: str) -> dict:
    """The run's suggestions for the folder's untagged images: its ``suggested_tags.csv`` where that is newer
    than the weights and covers them, else made now (and written there)."""
    from oste_core.engine.run_folder import RunFolder
    from oste_core.engine.tag_suggestions import SUGGESTIONS_FILE, TagSuggester, load_suggestions, save_suggestions

    path = run / SUGGESTIONS_FILE
    weights = RunFolder(run).weights_file()
    stored = load_suggestions(path) if path.is_file() and path.stat().st_mtime >= weights.stat().st_mtime else {}
    missing = [rel for rel in folder.untagged if rel not in stored]
    if missing:
        stored.update(TagSuggester.from_run(run, device=device).suggest_folder(folder, missing))
        save_suggestions(path, stored)
    return {rel: stored[rel] for rel in folder.untagged if rel in stored}


def cmd_tags(args: argparse.Namespace) -> int:
    from oste_core.data import open_folder
    from oste_core.engine.tag_suggestions import DEFAULT_THRESHOLD, accept, save_suggestions, uncertainty

    if not args.suggest:
        raise ValueError("oste tags: say --suggest (suggest the tags of the images not tagged yet)")
    if args.accept_above is not None and not 0.5 <= args.accept_above <= 1.0:
        raise ValueError(f"--accept-above {args.accept_above}: must be between 0.5 and 1")
    folder = open_folder(args.data)
    tagged = len(folder.samples)
    print(f"{args.data}: {tagged} images tagged ({sum(not s.tags for s in folder.samples)} background only), "
          f"{len(folder.untagged)} not tagged yet")
    suggestions = run_suggestions(args.run, folder, args.device)
    order = sorted(suggestions, key=lambda rel: -uncertainty(suggestions[rel])) if args.order == "uncertain" \
        else sorted(suggestions)
    for rel in order:
        shown = ", ".join(f"{t.name} {t.probability:.2f}" for t in suggestions[rel] if t.probability >= 0.05)
        sure = [t.name for t in suggestions[rel] if t.probability >= DEFAULT_THRESHOLD]
        print(f"{rel}: {'; '.join(sure) if sure else '(background only)'}   [{shown or 'every class < 0.05'}]")
    if args.out is not None:
        save_suggestions(args.out, suggestions)
        print(f"wrote {args.out}")
    if args.accept_above is not None:
        done = accept(folder, suggestions, args.accept_above)
        if done.tagged:
            folder.save_tags()
        empty = sum(not tags for tags in done.tagged.values())
        print(f"accepted the suggestions of {len(done.tagged)} images at {args.accept_above:g} ({empty} background "
              f"only); {len(done.left)} left for review (a class between {1 - args.accept_above:.2g} and "
              f"{args.accept_above:g}); tags saved to {folder.tags_path}" if done.tagged else
              f"no image is sure at {args.accept_above:g}; {len(done.left)} left for review")
    return 0


def print_class_priors(data: Path) -> None:
    """Each class of ``data`` with its ImageNet prior classes (priors.yaml, the VOC table or WordNet), or none."""
    from oste_core.data import open_folder
    from oste_core.data.priors import class_priors
    from oste_core.models.modules.imagenet_names import imagenet_wordnet

    folder = open_folder(data)
    names = imagenet_wordnet().class_names
    print(f"{data}: {len(folder.class_names)} classes, {len(folder.samples)} images tagged, "
          f"{len(folder.untagged)} not tagged yet; the ImageNet prior of each class:")
    for match in class_priors(folder.root, folder.class_names):
        if not match.classes:
            print(f"  {match.name}: none ({match.how})")
            continue
        listed = "; ".join(names[c].split(", ")[0] for c in match.classes[:6])
        more = f" ... and {len(match.classes) - 6} more" if len(match.classes) > 6 else ""
        print(f"  {match.name}: {len(match.classes)} ImageNet classes ({match.how}): {listed}{more}")
