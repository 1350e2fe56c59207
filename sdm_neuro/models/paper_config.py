"""The paper's CIFAR-10 UNet configuration (Cao et al., Table VII) and its published parameter counts."""
from __future__ import annotations

# The paper's CIFAR-10 configuration (Cao et al., "Spiking Diffusion Models", Table VII) and its
# parameter counts. The paper prints counts in units of 2^20 ("63.61M" = 63.61 x 2^20).
PAPER_CONFIG = {"image_size": 32, "in_channels": 3, "base_channels": 128, "channel_mult": [1, 2, 2, 4],
                "num_res_blocks": 2, "temb_dim": 512}
PAPER_PARAMS_M2 = {"snn": 63.61, "ann": 64.47}  # units of 2^20
# Exact counts behind those figures (shared notes): the reference spiking UNet at that config, and
# the pytorch-ddpm UNet at mult [1, 2, 2, 4] with its middle attention block.
PAPER_REFERENCE_PARAMS = {"snn": 66_696_413, "ann": 67_602_691}
MIB = 2 ** 20


def is_paper_config(card) -> bool:
    """Whether ``card`` has the paper's CIFAR-10 architecture (Table VII)."""
    m = card.model
    return all(getattr(m, k) == v if k != "channel_mult" else list(m.channel_mult) == v
               for k, v in PAPER_CONFIG.items())
