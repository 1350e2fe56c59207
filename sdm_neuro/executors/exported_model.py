"""An export file used as a noise predictor, through the batched PyTorch executor.

``ExportedModel`` looks like a ``DiffusionUNet`` to the samplers and to ``generate``
(``forward(x, t)``, ``set_threshold_scale``, ``spiking_neurons``), so ``sdm-neuro sample`` and
``evaluate`` can measure what quantisation costs: samples through the deployed fixed-point
network against samples from the trained float model.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..card import DiffusionSpec, ModelCard, ModelSpec, TrainingSpec
from ..errors import SdmError
from ..export.h5format import read_graph
from ..export.quantize import scale_thresholds
from .torch_executor import TorchExecutor


class ExportedModel(nn.Module):
    def __init__(self, path: str, mode: str = "fixed"):
        super().__init__()
        self.graph, self.info = read_graph(path)
        self.mode = mode
        self._base = {p.name: (p.threshold, p.vth_mant) for p in self.graph.spiking}
        self._executor = TorchExecutor(self.graph, mode)
        self.T = self.graph.T

    def card(self) -> ModelCard:
        betas = np.asarray(self.info["betas"])
        c, h, _ = self.graph.image_shape
        diff = DiffusionSpec(num_steps=len(betas), beta_start=float(betas[0]), beta_end=float(betas[-1]))
        if not np.allclose(np.linspace(betas[0], betas[-1], len(betas)), betas):
            raise SdmError("the export's noise schedule is not linear; sampling from it is not supported")
        name = self.info["meta"].get("model", "export")
        return ModelCard(ModelSpec(name=f"{name} (export, {self.mode})", image_size=h, in_channels=c, T=self.T),
                         diff, TrainingSpec())

    def spiking_neurons(self) -> list:
        return self.graph.spiking

    def set_threshold_scale(self, scale: float) -> None:
        for p in self.graph.spiking:
            p.threshold, p.vth_mant = self._base[p.name]
        if scale != 1.0:
            scale_thresholds(self.graph, scale)

    def to(self, device):  # noqa: D102 - executor moves its own tensors
        device = torch.device(device)
        if device != self._executor.device:
            self._executor = TorchExecutor(self.graph, self.mode, device)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps, _ = self._executor.run(x, t)
        return eps.to(x.device)
