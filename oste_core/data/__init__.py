"""Labelled folders, robust image loading, the training dataset and the synthetic demo data."""
from oste_core.data.image_io import IMAGE_EXTENSIONS, ImageLoadError, check_image, image_size, load_image, load_mask
from oste_core.data.problems import FolderError, Problem, summarise_problems
from oste_core.data.folder import LabelledFolder, Sample, stem_for, validate_images
from oste_core.data.layouts import detect_layout, open_folder
from oste_core.data.layouts.voc import VOC_CLASSES
from oste_core.data.dataset import TrainDataset, seed_worker

# imported last: it uses oste_core.export, which imports the modules above
from oste_core.data.synthetic import DEMO_CLASSES, write_demo_data

__all__ = [
    "DEMO_CLASSES",
    "IMAGE_EXTENSIONS",
    "VOC_CLASSES",
    "FolderError",
    "ImageLoadError",
    "LabelledFolder",
    "Problem",
    "Sample",
    "TrainDataset",
    "check_image",
    "detect_layout",
    "image_size",
    "load_image",
    "load_mask",
    "open_folder",
    "seed_worker",
    "stem_for",
    "summarise_problems",
    "validate_images",
    "write_demo_data",
]
