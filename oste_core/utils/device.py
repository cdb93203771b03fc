"""Device choice: CUDA, then Apple MPS, then CPU."""
from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """Resolve ``"auto"`` to the best available device; validate an explicit request."""
    if requested in ("", "auto", None):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was requested but CUDA is not available")
    return device


def device_description(device: torch.device) -> str:
    """Human-readable name: the CUDA card's name, or 'CPU (N threads)'."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
