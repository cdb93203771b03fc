"""Training, inference, evaluation metrics and distributed helpers."""
