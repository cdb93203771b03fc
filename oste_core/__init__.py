"""OSTE core: Qt-free models, losses, data, training, inference, evaluation and export."""
__version__ = "0.1.0"
