"""The suggestion stage: what turns a trained network's maps into an image's full-mask suggestion.

The recipe, per image (``recipe.py``, called by the predictor)::

    in:  the enhanced CAM (K, h, w) and the segmentation logits (K + 1, H, W) of the image; in the fast mode
         also its descriptors, last backbone stage and MAF stages (feature grid); its tags, verified mask,
         sparse corrections
     1. the enhanced CAM, each class min-max scaled to [0, 1] (when any fit below is mixed in)
     2. + the class co-localisation map       colocalisation.py   model.colocalisation_weight
     3. + the ImageNet class prior             imagenet_prior.py   model.imagenet_prior_weight
     4. + the folder pixel classifier          pixel_probe.py      model.pixel_probe_weight
     5. refined by the re-taught MAF          maf_refinement.py   model.suggestion_maf_weight (0: off)
        = the suggestion's maps (the enhanced CAM alone without the fast mode's fits)
     6. FBE's pseudo-label on those maps (Eqs 9-13, with its CRF)      fbe.py
     7. the corrections as seeds: their labels spread by similarity     seeds.py
     8. a dense CRF at the image's scale over [background, tags] of the segmentation probabilities mixed
        with FBE's scores (model.suggestion_seg_weight, background power model.suggestion_gamma)   crf.py
     9. FBE's sure pixels kept (with FBE on), then the stroked pixels, then the verified mask win
    out: the suggestion (H, W), every pixel background or a tag, and its confidence in [0, 1]

The fits of steps 2-5 are made once at the end of a fast-mode training (``stage_fit.py``, the probe and the
MAF over ``fitting.py``) and saved in ``model.pt`` (``state.py``). The annotator's side: the sparse
corrections' files (``corrections.py``), the pixel classifier's teaching sample (``teaching.py``), its refit
after a correction (``fitting.learn_from_user``), every photo's state and suggestion kept in the run
(``store.py``) and the refresh of every suggestion (``refresh.py``). The paper modules each step uses stay in
``oste_core/models/modules``.
"""
