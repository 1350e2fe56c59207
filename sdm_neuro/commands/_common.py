"""Small helpers shared by CLI commands."""
from __future__ import annotations


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"
