"""Write ``oste_core/models/modules/imagenet_wordnet.json``: the 1 000 ImageNet-1k classes in WordNet 3.0.

Run once at development time (the app reads the table, never WordNet itself):

    apt-get install wordnet-base            # WordNet 3.0's database files in /usr/share/wordnet
    python tools/make_imagenet_wordnet.py --wordnet /usr/share/wordnet --synsets imagenet_synsets.txt

``--synsets``: the 1 000 ImageNet-1k WordNet ids, one a line, in class-index order (torchvision's order is
the sorted ids; the list ships in timm's wheel as ``timm/data/_info/imagenet_synsets.txt``).

The table holds the noun synsets a class name can match, each with its lemmas and its parents in the table:

* every ImageNet class and all its WordNet ancestors (hypernyms and instance hypernyms): ``dog``,
  ``vehicle``, ``fruit``;
* of these only the physical entities (a "circle" is a shape, no prior for ImageNet's "bubble");
* the direct hyponyms of those synsets that are not ImageNet classes themselves ("puppy" is a kind of "dog"),
  under a parent that has at most ``MAX_ATTACHED_CLASSES`` ImageNet classes below it (a kind of "animal" is
  not a prior for 398 animals);
* the young animals that WordNet files under "young mammal" / "young bird" / "young fish" and not under their
  species, when their gloss names it: "kitten" is "young domestic cat", "foal" is "a young horse".

plus each ambiguous lemma's senses in WordNet's order (most frequent first; of the hyponyms only a name's
first ``ATTACHED_SENSES``: "ring" is not a boxing ring, a platform like ImageNet's "stage") and the irregular plurals
(``noun.exc``) of the lemmas in the table.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "oste_core" / "models" / "modules" / "imagenet_wordnet.json"
PHYSICAL_ENTITY = "n00001930"  # only physical things: "circle" (a shape) is no prior for "bubble"
ATTACHED_SENSES = 3  # a name matches a hyponym only through one of its first senses: "ring" is not a boxing ring
MAX_ATTACHED_CLASSES = 120  # "dog" (118 classes) is the most general name the VOC table uses
YOUNG = {"young", "young_mammal", "young_bird", "young_fish"}
LICENCE = (
    "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to use, copy, modify and "
    "distribute this software and database and its documentation for any purpose and without fee or royalty is "
    "hereby granted, provided that you agree to comply with the following copyright notice and statements, "
    "including the disclaimer, and that the same appear on ALL copies of the software, database and documentation, "
    "including modifications that you make for internal use or for distribution. THIS SOFTWARE AND DATABASE IS "
    "PROVIDED \"AS IS\" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY "
    "OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY "
    "OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL "
    "NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS. The name of Princeton University "
    "or Princeton may not be used in advertising or publicity pertaining to distribution of the software and/or "
    "database. Title to copyright in this software, database and any associated documentation shall at all times "
    "remain with Princeton University and LICENSEE agrees to preserve same."
)


def read_nouns(wordnet: Path) -> dict[str, tuple[list[str], list[str], list[str], str]]:
    """wnid -> (lemmas, hypernyms, instance hypernyms, gloss) of every noun synset (``data.noun``)."""
    synsets = {}
    for line in (wordnet / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        head, _, gloss = line.partition("|")
        fields = head.split()
        count = int(fields[3], 16)
        lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]) for i in range(count)]
        start = 4 + 2 * count
        pointers = fields[start + 1:start + 1 + 4 * int(fields[start])]
        kinds = [(pointers[4 * i], "n" + pointers[4 * i + 1]) for i in range(len(pointers) // 4) if pointers[4 * i + 2] == "n"]
        synsets["n" + fields[0]] = (lemmas, [w for k, w in kinds if k == "@"], [w for k, w in kinds if k == "@i"],
                                    gloss.strip())
    return synsets


def read_senses(wordnet: Path) -> dict[str, list[str]]:
    """lemma -> its noun synsets in WordNet's sense order (``index.noun``)."""
    senses = {}
    for line in (wordnet / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        pointer_count = int(fields[3])
        senses[fields[0]] = ["n" + offset for offset in fields[6 + pointer_count:]]
    return senses


def build(wordnet: Path, classes: list[str]) -> dict:
    nouns = read_nouns(wordnet)
    senses = read_senses(wordnet)
    parents: dict[str, list[str]] = {}

    def climb(wnid: str) -> None:
        if wnid in parents:
            return
        _, hypernyms, instances, _ = nouns[wnid]
        parents[wnid] = hypernyms + instances
        for parent in parents[wnid]:
            climb(parent)

    for wnid in classes:
        climb(wnid)
    physical = {PHYSICAL_ENTITY}
    changed = True
    while changed:
        grown = {w for w, ps in parents.items() if any(p in physical for p in ps)} | physical
        changed, physical = grown != physical, grown
    parents = {w: [p for p in ps if p in physical] for w, ps in parents.items() if w in physical or w in classes}
    below: dict[str, int] = dict.fromkeys(parents, 0)  # ImageNet classes below (or at) each core synset
    for wnid in classes:
        seen, stack = set(), [wnid]
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                below[node] += 1
                stack.extend(parents[node])
    core = set(parents)
    first_sense = {}
    for lemma, wnids in senses.items():
        in_core = [w for w in wnids if w in core]
        if in_core:
            first_sense[lemma] = in_core[0]
    for wnid, (lemmas, hypernyms, _, gloss) in nouns.items():
        if wnid in core:
            continue
        targets = [h for h in hypernyms if h in core and below[h] <= MAX_ATTACHED_CLASSES]
        if not targets and any(nouns[h][0][0] in YOUNG for h in hypernyms):
            named = re.sub(r"^(a|an|the) ", "", gloss.split(";")[0].strip().lower())
            match = re.fullmatch(r"young (.+)", named)
            if match and match.group(1).replace(" ", "_") in first_sense:
                targets = [first_sense[match.group(1).replace(" ", "_")]]
        if targets:
            parents[wnid] = targets
    table_lemmas = {wnid: nouns[wnid][0] for wnid in parents}
    order = sorted(parents)
    row = {wnid: index for index, wnid in enumerate(order)}
    known = {lemma.lower() for lemmas in table_lemmas.values() for lemma in lemmas}
    ambiguous = {}  # lemma -> its senses in the table, where that is not simply the one synset carrying it
    for lemma, wnids in senses.items():
        in_table = [w for w in wnids if w in parents]
        kept = [w for rank, w in enumerate(wnids) if w in parents and (w in core or rank < ATTACHED_SENSES)]
        if len(in_table) > 1 or kept != in_table:
            ambiguous[lemma] = kept
    plurals = {}
    for line in (wordnet / "noun.exc").read_text(encoding="latin-1").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] in known and fields[0] not in known:
            plurals[fields[0]] = fields[1]
    return {
        "source": "WordNet 3.0 (Princeton University; data.noun, index.noun, noun.exc) and the ImageNet-1k class "
                  "list (ILSVRC 2012 synsets); generated by tools/make_imagenet_wordnet.py",
        "licence": LICENCE,
        "classes": classes,
        # one row per synset: "wnid|lemma|lemma...", then the row numbers of its parents
        "synsets": [["|".join([wnid, *table_lemmas[wnid]]), *(row[p] for p in parents[wnid] if p in row)]
                    for wnid in order],
        "senses": ambiguous,
        "plurals": plurals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--synsets", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    classes = [line.strip() for line in args.synsets.read_text().splitlines() if line.strip()]
    if len(classes) != 1000 or classes != sorted(classes):
        raise SystemExit(f"{args.synsets}: expected the 1000 ImageNet-1k ids in sorted order")
    table = build(args.wordnet, classes)
    args.out.write_text(json.dumps(table, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(table['synsets'])} synsets, {len(table['senses'])} ambiguous lemmas, "
          f"{len(table['plurals'])} irregular plurals, {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
