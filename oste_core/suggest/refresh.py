"""Every suggestion ready after training, and the refresh after a correction: refit the folder pixel classifier,
then re-predict every suggestion.

    training ends -> prepare_suggestions                    every photo's suggestion made once and stored in the
                                                            run (``store.py``): the export and the GUI read them

    correction saved (verified mask or sparse strokes)
      -> Predictor.learn_from_user(folder, changed stems)   refit from teaching.pt + the annotator's pixels
      -> the current image's suggestion                      (its strokes as seeds)
      -> the next images in list order, then all the others   (one at a time; cancellable)

A newer correction cancels the refresh in progress (``cancel``) and starts a new one, so the image in front of
the annotator is always the first to change. Qt-free: the GUI runs it on its inference thread, the loop
benchmark and ``oste export`` call it directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from pathlib import Path

from oste_core.data import ImageLoadError, LabelledFolder
from oste_core.engine.predictor import Prediction, Predictor

NEXT_FIRST = 5  # images after the current one (in list order) refreshed before the rest


def refresh_order(stems: list[str], current: str | None, next_first: int = NEXT_FIRST) -> list[str]:
    """``stems`` (list order) with ``current`` first, then the ``next_first`` after it, then the rest in order."""
    if current not in stems:
        return list(stems)
    at = stems.index(current)
    after = stems[at + 1 : at + 1 + next_first]
    first = [current, *after]
    chosen = set(first)
    return first + [stem for stem in stems if stem not in chosen]


@dataclass
class RefreshReport:
    refit: bool  # the pixel classifier changed
    refit_s: float
    refreshed: int  # suggestions recomputed
    refresh_s: float
    cancelled: bool
    problems: list[str]


def refresh_suggestions(predictor: Predictor, folder: LabelledFolder, changed: list[str] | None = None,
                        current: str | None = None, stems: list[str] | None = None,
                        on_prediction: Callable[[str, Prediction], None] | None = None,
                        cancel: Callable[[], bool] | None = None) -> RefreshReport:
    """Refit with the annotator's pixels of ``changed`` stems (None: check every image), then re-predict
    ``stems`` (default: the folder's, in order) with ``current`` first. ``on_prediction(stem, prediction)``
    after each; ``cancel()`` is checked between images. Unreadable images are listed in ``problems``."""
    start = time.perf_counter()
    refit = predictor.learn_from_user(folder, changed)
    refit_s = time.perf_counter() - start
    order = refresh_order(stems if stems is not None else [s.stem for s in folder.samples], current)
    refreshed, problems, cancelled = 0, [], False
    start = time.perf_counter()
    for stem in order:
        if cancel is not None and cancel():
            cancelled = True
            break
        try:
            prediction = predictor.predict_sample(folder, folder.find(stem))
        except (ImageLoadError, KeyError) as exc:
            problems.append(f"{stem}: {exc}")
            continue
        refreshed += 1
        if on_prediction is not None:
            on_prediction(stem, prediction)
    return RefreshReport(refit, refit_s, refreshed, time.perf_counter() - start, cancelled, problems)


def prepare_suggestions(run_dir: str | Path, folder: LabelledFolder, device: str = "auto", predict: bool = True,
                        on_progress: Callable[[int, int], None] | None = None,
                        cancel: Callable[[], bool] | None = None) -> list[str]:
    """Delete the run's stored suggestions of older weights; with ``predict``, make every photo's suggestion with
    the run's saved weights (after the annotator's pixels, as an export does), keep it in the run's store, and
    delete the prediction-scale features the stored states replace. Returns the problems (unreadable images);
    nothing to do outside the fast mode."""
    predictor = Predictor.from_run(run_dir, device=device)
    if predictor.store is None:
        return []
    predictor.store.prune()
    if not predict:
        return []
    predictor.learn_from_user(folder)
    problems = []
    for done, sample in enumerate(folder.samples, start=1):
        if cancel is not None and cancel():
            break
        try:
            predictor.predict_sample(folder, sample)
        except ImageLoadError as exc:
            problems.append(str(exc))
        if on_progress is not None:
            on_progress(done, len(folder.samples))
    cache = predictor.feature_cache
    for sample in folder.samples:
        if sample.image_path.is_file() and predictor.store.has_state(cache.key(sample.image_path)):
            cache.file(sample.image_path).unlink(missing_ok=True)
    return problems
