"""The ImageNet prior of other class names on a trained run: which ImageNet classes, and the suggestion mIoU.

For each ``--names`` variant (``old=new,...``: the classes renamed) the prior is made again for the new
names (`ImagenetPrior.for_classes`, the backbone's ImageNet classifier) and put into the run's predictor in
place of the one it was saved with; the suggestion is then scored on DATA's images with a mask (``--only``:
those whose file name starts with it). The run's pixel probe stays the one fitted with the saved prior.

    python benchmarks/bench_prior_names.py RUN ../shared/data/real-dev/mix --only camvid \\
        --names cat=kitty,dog=puppy,car=automobile "car=motor vehicle" car=vehicle car=thing
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from oste_core.data import open_folder
from oste_core.engine.predictor import Predictor
from oste_core.engine.run_eval import RunEvaluation
from oste_core.models.backbones import build_backbone
from oste_core.models.modules.imagenet_names import match_names
from oste_core.models.modules.imagenet_prior import ImagenetPrior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--names", nargs="+", default=[], help="old=new,... renames, one variant each")
    parser.add_argument("--only", default="", help="score only images whose file name starts with this")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    predictor = Predictor.from_run(args.run, device=args.device)
    model_cfg = predictor.cfg.model
    classifier = build_backbone(model_cfg.backbone, model_cfg.output_stride, "auto", frozen_bn=True).imagenet_classifier
    folder = open_folder(args.data)
    samples = [s for s in folder.samples if s.gt_mask is not None and s.rel.rpartition("/")[2].startswith(args.only)]
    saved = predictor.imagenet_prior
    results = {}
    for variant in ["(as trained)", *args.names]:
        rename = dict(pair.split("=", 1) for pair in variant.split(",")) if "=" in variant else {}
        names = [rename.get(name, name) for name in predictor.class_names]
        prior = ImagenetPrior.for_classes(names, classifier) if rename else saved
        predictor.imagenet_prior = prior
        predictor.clear_cache()
        evaluation = RunEvaluation(predictor.class_names)
        for sample in samples:
            evaluation.add(sample, predictor.predict_sample(folder, sample))
        report = evaluation.report(predictor.problems)
        matched = {m.name: (len(m.classes), m.how) for m in match_names(names) if m.name in rename.values()}
        same = prior is not None and saved is not None and prior.classes == saved.classes
        results[variant] = {"suggestion_miou": report["suggestion_miou"], "per_class": {name: values["suggestion"] for name, values in report["per_class"].items()
                                          if values["suggestion"] is not None},
                            "matched": matched, "same_prior_classes_as_trained": same}
        print(json.dumps({variant: results[variant]}), flush=True)


if __name__ == "__main__":
    main()
