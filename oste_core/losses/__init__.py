"""Losses of the OSTE network (Eqs 14-22); ``compute_losses`` combines them."""
from .classification import classification_loss, tile_classification_loss
from .mae import cam_consistency_loss, maf_consistency_loss, mae_loss
from .seg import segmentation_loss
from .total import LOSS_KEYS, compute_losses

__all__ = [
    "LOSS_KEYS",
    "cam_consistency_loss",
    "classification_loss",
    "compute_losses",
    "maf_consistency_loss",
    "mae_loss",
    "segmentation_loss",
    "tile_classification_loss",
]
