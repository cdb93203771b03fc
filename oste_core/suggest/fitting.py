"""The suggestion stage's fits over a folder: the pixel classifier after training, its refit from the
annotator's pixels, and the opt-in MAF re-teaching. Each reads a ``Predictor`` of the run (the fast mode).

    after training:  fit_pixel_probe        every photo's suggestion (no classifier yet) -> classifier + teaching.pt
                     teach_maf_refinement   FBE on the prior-mixed maps -> a re-taught MAF (opt-in)
    after a correction: learn_from_user     teaching.pt + verified masks + corrections -> refitted classifier
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from oste_core.data import LabelledFolder, Sample
from oste_core.labels import UNSURE, tags_multi_hot
from oste_core.models.modules.fbe import make_pseudo_labels
from oste_core.models.modules.maf import MultilevelActivationFusion
from oste_core.models.modules.maf_refinement import RETEACH_STEPS, labels_on_cam_grid, reteach_affinity
from oste_core.models.modules.pixel_probe import PixelProbe, PixelProbeFit
from oste_core.suggest.corrections import user_label_version, user_labels
from oste_core.suggest.recipe import make_suggestion_later, restrict_to_tags, suggestion_maps
from oste_core.suggest.seeds import labels_on_grid
from oste_core.suggest.teaching import TeachingSet

if TYPE_CHECKING:
    from oste_core.engine.predictor import Predictor

Progress = Callable[[int, int], None]


def _grid_maps(predictor: "Predictor", sample: Sample) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """The sample's pixels, maps and segmentation logits at the pixels' size."""
    pixels, out = predictor._maps(None, sample.image_path)
    size = tuple(pixels.shape[-2:])
    seg_logits = out["seg_logits"].float()
    if tuple(seg_logits.shape[-2:]) != size:
        seg_logits = torch.nn.functional.interpolate(seg_logits[None], size=size, mode="bilinear",
                                                     align_corners=False)[0]
    return pixels, out, seg_logits


@torch.no_grad()
def fit_pixel_probe(predictor: "Predictor", folder: LabelledFolder, samples: list[Sample] | None = None,
                    on_progress: Progress | None = None,
                    cancel: Callable[[], bool] | None = None) -> tuple[PixelProbe, TeachingSet] | None:
    """The folder pixel classifier (``pixel_probe.py``) fitted on the suggestions (without a classifier) of
    ``samples`` (default: the folder's), verified masks included, and the sample it was taught from
    (``teaching.py``). None without the fast mode, if cancelled or with nothing to learn. Each photo's CRF runs
    beside the next photo's maps."""
    if predictor.feature_cache is None:
        return None
    samples = folder.samples if samples is None else samples
    fit = PixelProbeFit(predictor.num_classes)
    previous = None  # (its suggestion once its CRF ends, its descriptors, its index): the CRF runs meanwhile

    def add(started: Callable, descriptors: torch.Tensor, image: int) -> None:
        fit.add(descriptors, *started(), image=image)

    for done, sample in enumerate(samples, start=1):
        if cancel is not None and cancel():
            return None
        pixels, out, seg_logits = _grid_maps(predictor, sample)
        verified = predictor._verified_at(sample, tuple(pixels.shape[-2:]))
        tags = folder.tag_indices(sample)
        maps = suggestion_maps(out, tags, predictor.priors, predictor.cfg.model, use_probe=False)
        started = make_suggestion_later(restrict_to_tags(seg_logits, tags), maps, pixels[0], tags, None,
                                        predictor.cfg.model, predictor.crf, verified)
        if previous is not None:
            add(*previous)
        previous = (started, out["descriptors"], done - 1)
        if on_progress is not None:
            on_progress(done, len(samples))
    if previous is not None:
        add(*previous)
    probe, kept = fit.result(), fit.sample()
    if probe is None or kept is None:
        return None
    return probe, TeachingSet.from_pixels(*kept, stems=[sample.stem for sample in samples])


def learn_from_user(predictor: "Predictor", folder: LabelledFolder, stems: list[str] | None = None) -> bool:
    """Refit the classifier from the run's teaching sample and the annotator's pixels (``teaching.py``),
    re-reading only the photos whose verified mask or corrections changed (``stems``: those to check; default
    every photo). True when the classifier changed; False without a teaching sample (not a fast-mode run, or
    trained before it was kept) or when nothing changed."""
    teaching = predictor.teaching
    if teaching is None:
        return False
    changed = False
    for sample in folder.samples if stems is None else [folder.find(stem) for stem in stems]:
        version = user_label_version(folder.root, sample)
        if teaching.known(sample.stem, version) or (version == (None, None) and sample.stem not in teaching.user_stems):
            continue
        teaching.set_user_pixels(sample.stem, version, *_user_pixels(predictor, folder, sample))
        changed = True
    if changed:
        predictor.set_pixel_probe(teaching.fit(seed=predictor.cfg.train.seed) if teaching.user_stems else None,
                                  teaching.identity())
    return changed


def _user_pixels(predictor: "Predictor", folder: LabelledFolder,
                 sample: Sample) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The compact descriptors and labels of the cells the annotator labelled in one photo (None, None: none),
    read from the photo's state (``ImageState``: stored in the run, no backbone pass)."""
    state = predictor._state(None, sample.image_path)
    compact = state.compact
    if compact is None:  # the MAF refinement's states keep every map instead
        compact = predictor.teaching.teaching.project_grid(state.out["descriptors"])
    mask, verified = user_labels(folder.root, sample.stem, sample.verified_mask, tuple(state.pixels.shape[-2:]),
                                 predictor.num_classes)
    if mask is None:
        return None, None
    cells = torch.from_numpy(labels_on_grid(mask, tuple(compact.shape[1:]),
                                            min_share=0.5 if verified else 0.01)).long()
    keep = cells != UNSURE
    return compact[:, keep].T, cells[keep]


@torch.no_grad()
def teach_maf_refinement(predictor: "Predictor", folder: LabelledFolder, samples: list[Sample] | None = None,
                         on_progress: Progress | None = None,
                         cancel: Callable[[], bool] | None = None) -> MultilevelActivationFusion | None:
    """A copy of the run's MAF re-taught on FBE's pseudo-labels of the suggestion's maps of ``samples`` (default:
    the folder's), verified masks winning (``maf_refinement.py``); ``on_progress`` counts the images, then the
    optimiser steps. None without the fast mode or MAF, if cancelled or with nothing to learn."""
    model = predictor.model
    if predictor.feature_cache is None or model.maf is None:
        return None
    samples = folder.samples if samples is None else samples
    steps = RETEACH_STEPS
    labels = []
    for done, sample in enumerate(samples, start=1):
        if cancel is not None and cancel():
            return None
        pixels, out, _ = _grid_maps(predictor, sample)
        tags = folder.tag_indices(sample)
        multi_hot = tags_multi_hot(tags, predictor.num_classes, predictor.device)[None]
        maps = suggestion_maps(out, tags, predictor.priors, predictor.cfg.model)
        pseudo = make_pseudo_labels(maps[None], pixels, multi_hot, predictor.cfg.model, predictor.crf)[0]
        verified = predictor._verified_at(sample, tuple(pixels.shape[-2:]))
        if verified is not None:
            verified = verified.to(pseudo.device).long()
            pseudo = torch.where(verified != UNSURE, verified, pseudo)
        grid = tuple(out["maf_stages"][-1].shape[-2:])
        labels.append(labels_on_cam_grid(pseudo.cpu(), grid))
        if on_progress is not None:
            on_progress(done, len(samples) + steps)

    def stage_features(index: int) -> list[torch.Tensor]:
        features = predictor.feature_cache.get(samples[index].image_path)
        return predictor._maf_stages(features.stage_list(len(model.backbone.stage_channels), predictor.device))

    on_step = None if on_progress is None else lambda step, _: on_progress(len(samples) + step, len(samples) + steps)
    return reteach_affinity(model.maf, labels, stage_features, steps=steps, seed=predictor.cfg.train.seed,
                            cancel=cancel, on_step=on_step)
