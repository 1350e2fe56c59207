"""sdm-neuro: spiking diffusion models (Cao et al.) trained with lava-dl SLAYER parts and
deployed to Loihi-style Lava networks.

Flow: model card -> model -> checkpoint -> export file (the contract) -> executors -> counts
-> energy report. Heavy dependencies (torch, lava, slayer) are imported lazily by submodules.
"""

__version__ = "0.1.0"
