"""Small helpers shared by CLI commands."""
from __future__ import annotations


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)
