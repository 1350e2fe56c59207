"""Shared test fixtures: tiny models and graphs that build in well under a second."""
from __future__ import annotations

import torch

from sdm_neuro.card import card_from_dict
from sdm_neuro.models import build_model


def tiny_model(seed: int = 0, **model_kw):
    """A small random spiking UNet with non-trivial BatchNorm statistics, in eval mode."""
    spec = {"base_channels": 4, "channel_mult": [1, 2], "temb_dim": 16, "T": 4, "num_res_blocks": 1}
    spec.update(model_kw)
    card = card_from_dict({"model": spec, "training": {"steps": 1}})
    torch.manual_seed(seed)
    model = build_model(card)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, card.model.in_channels, card.model.image_size, card.model.image_size),
                  torch.randint(0, 1000, (16,)))
    # larger weights so that deep layers fire too
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bn1.weight") or n.endswith("bn2.weight"):
                p.mul_(2.0)
    return model.eval(), card
