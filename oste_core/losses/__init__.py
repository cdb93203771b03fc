"""Losses of the OSTE network (Eqs 14-22); ``compute_losses`` combines them."""
from .affinity import affinity_loss
from .classification import classification_loss, tile_classification_loss
from .mae import cam_consistency_loss
from .seg import segmentation_loss
from .total import LOSS_KEYS, compute_losses

__all__ = [
    "LOSS_KEYS",
    "affinity_loss",
    "cam_consistency_loss",
    "classification_loss",
    "compute_losses",
    "segmentation_loss",
    "tile_classification_loss",
]
