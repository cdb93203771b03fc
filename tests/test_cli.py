"""The `oste` command line contract: real commands on a tiny synthetic project."""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from oste_core.cli import main
from oste_core.data import load_mask, open_folder

TINY = ["--iters", "3", "--batch", "2", "--crop", "64", "--device", "cpu",
        "--set", "train.workers=0", "--set", "model.cam_scales=1.0", "--set", "model.crf_backend=torch",
        "--set", "model.crf_iters=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_folder):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", str(demo_folder), "--out", str(run), *TINY]) == 0
    return run


def test_demo_data_is_a_native_folder_with_masks(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path / "d"), "--n", "5", "--size", "48", "--seed", "3"]) == 0
    folder = open_folder(tmp_path / "d")
    assert len(folder.samples) == 5 and all(s.gt_mask for s in folder.samples)
    assert "5 demo images" in capsys.readouterr().out


def test_train_saves_overrides_and_resume_extends(trained, demo_folder):
    from oste_core.config import OSTEConfig

    cfg = OSTEConfig.load(trained / "config.yaml")
    assert (cfg.train.iters, cfg.train.crop, cfg.model.crf_backend) == (3, 64, "torch")
    assert main(["train", str(demo_folder), "--out", str(trained), *TINY, "--resume",
                 "--iters", "4"]) == 0
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["iteration"] == 4


def test_eval_prints_a_table_and_writes_json(trained, demo_folder, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(trained), str(demo_folder), "--json", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    for key in ("cam_miou", "pseudo_miou", "pseudo_coverage", "seg_miou"):
        assert 0.0 <= report[key] <= 1.0, key
    assert "background" in report["per_class"]
    assert "mIoU" in capsys.readouterr().out


def test_predict_and_export_formats(trained, demo_folder, tmp_path):
    pred = tmp_path / "pred"
    assert main(["predict", str(trained), str(demo_folder), "--out", str(pred), "--cams", "--device", "cpu"]) == 0
    stems = [s.stem for s in open_folder(demo_folder).samples]
    for layer in ("suggestion", "pseudo", "seg"):
        assert sorted(p.stem for p in (pred / layer).glob("*.png")) == sorted(stems), layer
    assert list((pred / "cams").glob("*.png"))
    export = tmp_path / "export"
    args = ["export", str(trained), str(demo_folder), "--out", str(export), "--format", "voc,labelme,cvat",
            "--what", "seg", "--device", "cpu"]
    assert main(args) == 0
    assert len(list(export.rglob("*.json"))) == len(stems)
    assert list(export.rglob("*.zip"))
    png = next(p for p in export.rglob("*.png") if p.stem == stems[0])
    assert Image.open(png).mode == "P"
    assert main(args) == 1  # an existing export is never overwritten without --overwrite
    assert main([*args, "--overwrite"]) == 0


def test_export_uses_verified_masks(trained, demo_folder, tmp_path):
    import shutil

    from oste_core.export import save_palette_png

    data = tmp_path / "data"
    shutil.copytree(demo_folder, data)
    sample = open_folder(data).samples[0]
    verified = np.zeros((64, 64), np.uint8)
    verified[10:30, 10:30] = 1
    save_palette_png(data / "verified" / f"{sample.stem}.png", verified)
    export = tmp_path / "export"
    assert main(["export", str(trained), str(data), "--out", str(export), "--device", "cpu"]) == 0
    png = next(p for p in export.rglob("*.png") if p.stem == sample.stem)
    assert np.array_equal(load_mask(png), verified)


def test_errors_are_one_line_and_non_zero(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "r"), "--set", "model.nope=1"]) == 1
    assert "model.nope" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing-run"), str(tmp_path)]) == 1
    assert "missing-run" in capsys.readouterr().err


def test_info_names_device_and_crf_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "CPU" in out and "pydensecrf" in out


def test_info_of_a_run_shows_its_size_on_disk(trained, tmp_path, capsys):
    assert main(["info", str(trained)]) == 0
    assert re.search(r"run folder: \d+ MB \(features/ \d+ MB; [\d.]+ MB per photo, 12 photos", capsys.readouterr().out)
    assert main(["info", str(tmp_path / "nothing")]) == 1


def test_headless_demo_trains_evaluates_and_exports_every_image_once(tmp_path, capsys):
    """`oste demo` (what `oste-gui --demo` runs without a display): one prediction pass feeds both the
    evaluation table and the export."""
    assert main(["demo", "--out", str(tmp_path), "--iters", "1", "--n", "6"]) == 0
    out = capsys.readouterr().out
    assert "images evaluated: 6" in out
    assert len(list((tmp_path / "export" / "voc" / "SegmentationClass").glob("*.png"))) == 6
    assert len(list((tmp_path / "export" / "labelme").glob("*.json"))) == 6


def _project_with_a_big_image(demo_folder, root, size=(2000, 1500)):
    """Two demo images plus a big photo-sized one, tagged with the demo's first class."""
    import shutil

    root.mkdir(parents=True)
    for name in ("classes.txt", "demo_0000.png", "demo_0001.png"):
        shutil.copy(demo_folder / name, root / name)
    rows = [line for line in (demo_folder / "tags.csv").read_text().splitlines()[1:3]]
    tag = (demo_folder / "classes.txt").read_text().split()[0]
    (root / "images").mkdir()
    Image.new("RGB", size, (120, 90, 60)).save(root / "images" / "big.png")
    (root / "tags.csv").write_text("\n".join(["image,tags", *rows, f"images/big.png,{tag}"]) + "\n")
    return root


def test_export_keeps_verified_masks_at_full_resolution_and_upscales_predictions(trained, demo_folder, tmp_path):
    """A 2000x1500 image whose verified mask has a small region: every pixel is exported as verified;
    without the verified mask, the prediction (made at 1024 px) is enlarged to 2000x1500."""
    from oste_core.export import save_palette_png

    data = _project_with_a_big_image(demo_folder, tmp_path / "data")
    verified = np.zeros((1500, 2000), np.uint8)
    cv2.circle(verified, (1200, 400), 25, 1, -1)
    save_palette_png(data / "verified" / "big.png", verified)
    export = tmp_path / "export"
    assert main(["export", str(trained), str(data), "--out", str(export), "--what", "seg",
                 "--format", "voc,labelme,cvat", "--device", "cpu"]) == 0
    exported = load_mask(export / "voc" / "SegmentationClass" / "big.png")
    assert exported.shape == (1500, 2000)
    assert int((exported == 1).sum()) == int((verified == 1).sum()) == 1961
    assert np.array_equal(exported, verified)
    predicted = tmp_path / "predicted"
    assert main(["export", str(trained), str(data), "--out", str(predicted), "--what", "seg",
                 "--ignore-verified", "--device", "cpu"]) == 0
    mask = load_mask(predicted / "voc" / "SegmentationClass" / "big.png")
    assert mask.shape == (1500, 2000) and set(np.unique(mask)) <= {0, 1}


def test_every_folder_problem_is_summarised_on_the_console(trained, demo_folder, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_folder, data)
    (data / "a").mkdir()
    shutil.copy(data / "demo_0003.png", data / "a" / "demo_0003.png")  # same file stem as demo_0003.png
    (data / "broken.png").write_bytes(b"not a png")
    rows = (data / "tags.csv").read_text().splitlines()
    rows += ["gone.png,", "gone2.png,", rows[1], "broken.png,", "a/demo_0003.png,"]
    (data / "tags.csv").write_text("\n".join(rows) + "\n")
    export = tmp_path / "export"
    capsys.readouterr()
    assert main(["export", str(trained), str(data), "--out", str(export), "--what", "pseudo", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"6 folder problem(s) (full list: {export / 'problems.txt'})" in err
    for kind, count in (("missing file", 2), ("duplicate row", 1), ("stem collision", 2), ("unreadable image", 1)):
        assert f"  {kind}: {count}\n" in err, kind
    assert "gone.png" in err and "broken.png" in err and "a/demo_0003.png" in err
    listed = (export / "problems.txt").read_text().splitlines()
    assert len(listed) == 6 and any("gone2.png" in line for line in listed)


def test_export_default_is_the_full_mask_suggestion(trained, demo_folder, tmp_path, capsys):
    """Without --what, every pixel of every exported mask is background or one of the image's tags."""
    from oste_core.engine.predictor import Predictor

    export = tmp_path / "export"
    assert main(["export", str(trained), str(demo_folder), "--out", str(export), "--format", "voc,cvat",
                 "--device", "cpu"]) == 0
    folder = open_folder(demo_folder)
    predictor = Predictor.from_run(trained, device="cpu")
    for sample in folder.samples:
        mask = load_mask(export / "voc" / "SegmentationClass" / f"{sample.stem}.png")
        assert set(np.unique(mask)) <= {0, *folder.tag_indices(sample)}, sample.stem  # no 255 anywhere
        suggestion = predictor.predict_sample(folder, sample).suggestion  # at 1.5x the working size
        at_image_size = cv2.resize(suggestion, mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(mask, at_image_size)
    assert "unsure" not in capsys.readouterr().out  # a full mask: no CVAT 'unsure' label needed


def test_train_uses_the_fast_mode_says_so_and_prints_each_phase_with_its_eta(demo_folder, tmp_path, capsys):
    from oste_core.config import FAST_PRESET, OSTEConfig

    run = tmp_path / "run"
    assert main(["train", str(demo_folder), "--out", str(run), "--iters", "4", "--device", "cpu",
                 "--set", "train.fast_max_side=48", "--set", "model.crf_backend=torch"]) == 0
    out = capsys.readouterr().out
    assert "the fast mode" in out and "--full" in out
    phases = re.findall(r"^\[ *[\d a-z]+\] (.+) \d+/\d+, ETA ", out, flags=re.M)  # not a terminal: plain lines
    assert list(dict.fromkeys(phases)) == ["features", "warm-up", "training", "priors", "pixel classifier",
                                          "suggestions"]
    assert "total time:" in out
    cfg = OSTEConfig.load(run / "config.yaml")
    assert cfg.loss.seg_warmup_iters == 5 * 4 // 6  # the warm-up leaves a sixth of a short schedule to the heads
    for key, value in FAST_PRESET.items():
        if key not in ("train.iters", "loss.seg_warmup_iters"):
            section, name = key.split(".")
            saved = getattr(getattr(cfg, section), name)
            assert saved == (tuple(value) if isinstance(saved, tuple) else value), key
    assert cfg.train.iters == 4


def test_full_fine_tuning_and_the_paper_schedule_only_when_asked(demo_folder, tmp_path):
    from oste_core.cli import _parser, build_config
    from oste_core.config import OSTEConfig

    def config(*flags: str) -> OSTEConfig:
        return build_config(_parser().parse_args(["train", str(demo_folder), "--out", str(tmp_path), "--device", "cpu",
                                                  *flags]))

    paper = config("--paper")
    assert (paper.train.iters, paper.train.crop) == (OSTEConfig().train.iters, OSTEConfig().train.crop)
    full = config("--full")
    assert not full.train.freeze_backbone and full.train.iters == 300
    assert config().train.freeze_backbone
    with pytest.raises(SystemExit):
        config("--full", "--paper")


def test_update_command_continues_a_run(trained, demo_folder, capsys):
    before = (trained / "model.pt").stat().st_mtime_ns
    assert main(["update", str(trained), str(demo_folder), "--budget", "2", "--device", "cpu"]) == 0
    assert (trained / "model.pt").stat().st_mtime_ns != before
    assert "updated run" in capsys.readouterr().out
