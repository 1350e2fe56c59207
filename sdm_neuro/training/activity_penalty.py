"""Activity penalties of energy-aware training (``training.sop_penalty``, ``training.rate_penalty``).

What the deployed network pays for is synaptic operations: each spike of a neuron drives its
fan-out of stored synapses on the chip. The penalties are computed from the training model's own
spikes (so they are differentiable through the IF neurons' surrogate gradient), weighted by what
the deployed graph charges for each of them:

* **Fan-out weights** (``deployed_weights``): the model is lowered and quantised exactly as
  ``export`` does (``export.lowering`` + ``export.quantize``); each population's per-neuron
  fan-out is the sum over its outgoing projections of ``counting.synops.fanout`` (boundary-aware,
  zero-weight synapses not stored and not charged: what ``SynOpCounter`` charges). Each population is
  mapped back to the IF module of the training model (and the channel slice of that module's
  input, for an up block whose neuron spikes a concatenation) whose spikes it is. The 1x1
  shortcuts, folded BatchNorm and residual sums make the deployed fan-out of a neuron larger than
  its own conv's: its spikes also feed every later population whose current carries the residual
  term. A current that the lowering spikes once but the training model spikes twice (a skip
  current re-spiked by an up block with the same threshold and gains) is charged once: the second
  copy's slice gets weight 0.
* **SOP penalty** (per image and network evaluation, dimensionless, in [0, 1]):
  ``P_sop = sum_{n,t} f_n s_{n,t} / (N_img * T * sum_n f_n)``: the counted SOPs relative to the
  SOPs of the same network with every neuron spiking at every step (a fan-out-weighted firing
  rate). ``training.sop_penalty`` x ``P_sop`` is added to the eps-MSE.
* **Rate penalty**: ``P_rate = sum_{n,t} s_{n,t} / (N_img * T * neurons)``: the mean firing rate of
  the deployed spiking populations (duplicates charged once, as above), without fan-out.

The fan-out weights come from the live weights at the start of the run and are recomputed after every checkpoint
(``refresh``), so a resumed run uses the same weights as an uninterrupted one; they change only
where a quantised weight crosses zero.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..counting.synops import fanout
from ..export.lowering import Lowering
from ..export.quantize import quantize_graph


class _RecordingLowering(Lowering):
    """The export's lowering, recording which IF module (and input channel offset) made each population."""

    def __init__(self, model, num_timesteps: int):
        super().__init__(model, num_timesteps)
        self.origin: dict[str, tuple[int, int]] = {}  # population -> (id(neuron module), channel offset)
        self.module_shape: dict[int, list] = {}  # id(neuron module) -> [C total, H, W]
        self._offset: dict[int, int] = {}

    def spike(self, cur, neuron, label):
        before = len(self.pops)
        name = super().spike(cur, neuron, label)
        off = self._offset.get(id(neuron), 0)
        self._offset[id(neuron)] = off + cur.shape[0]
        self.module_shape[id(neuron)] = [off + cur.shape[0], cur.shape[1], cur.shape[2]]
        if len(self.pops) > before:
            self.origin[name] = (id(neuron), off)
        return name


def population_fanout(graph) -> dict[str, np.ndarray]:
    """Stored synapses driven by one spike of each neuron of each spiking population, summed over
    all its outgoing projections: (C*H*W,) per population, C-order (what ``SynOpCounter`` charges)."""
    per_pop = {p.name: np.zeros(p.size, dtype=np.float64) for p in graph.spiking}
    for proj in graph.projections:
        if proj.src in per_pop:
            per_pop[proj.src] += fanout(proj, graph.populations[proj.src].shape)
    return per_pop


def deployed_weights(model, num_timesteps: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], object]:
    """Per IF module (by name in ``model``): (fan-out weights, neuron weights), each (C, H, W).

    Fan-out: the stored synapses each neuron's spike drives in the deployed (lowered, quantised)
    graph; neuron weight: 1 where the neuron is a deployed population's neuron, 0 for a duplicate.
    Also returns the quantised graph. ``model`` is not changed (a copy in eval mode is lowered).
    """
    from ..neurons import IFNeuron

    m = copy.deepcopy(model).eval()
    m.set_threshold_scale(1.0)
    low = _RecordingLowering(m, num_timesteps)
    graph = low.run()
    quantize_graph(graph)
    per_pop = population_fanout(graph)
    names = {id(mod): n for n, mod in m.named_modules() if isinstance(mod, IFNeuron)}
    fan: dict[str, torch.Tensor] = {}
    neurons: dict[str, torch.Tensor] = {}
    for mid, shape in low.module_shape.items():
        fan[names[mid]] = torch.zeros(shape, dtype=torch.float64)
        neurons[names[mid]] = torch.zeros(shape, dtype=torch.float64)
    for pop, (mid, off) in low.origin.items():
        c, h, w = graph.populations[pop].shape
        fan[names[mid]][off:off + c] = torch.from_numpy(per_pop[pop].reshape(c, h, w))
        neurons[names[mid]][off:off + c] = 1.0
    return fan, neurons, graph


class ActivityPenalty:
    """Forward hooks on a spiking model's IF modules that sum their weighted spikes for the penalty.

    Use: ``start()`` before a forward pass, ``term(n_images)`` after it (a 0-dim tensor with
    gradient: ``sop_weight x P_sop + rate_weight x P_rate``); ``last`` holds the two penalties'
    values (floats) of the last ``term``. ``close()`` removes the hooks.
    """

    def __init__(self, model: nn.Module, num_timesteps: int, sop_weight: float, rate_weight: float):
        from ..neurons import IFNeuron

        self.model, self.num_timesteps = model, num_timesteps
        self.sop_weight, self.rate_weight = float(sop_weight), float(rate_weight)
        self.T = model.T
        self._collecting = False
        self._sums: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.last: dict[str, float] = {}
        self.refresh()
        self._handles = [mod.register_forward_hook(self._hook(name))
                         for name, mod in model.named_modules() if isinstance(mod, IFNeuron)]

    def refresh(self) -> None:
        """Recompute the fan-out weights from the model's current weights (eval-mode lowering)."""
        fan, neurons, _ = deployed_weights(self.model, self.num_timesteps)
        dev = next(self.model.parameters()).device
        self.fan = {k: v.float().to(dev) for k, v in fan.items()}
        self.neurons = {k: v.float().to(dev) for k, v in neurons.items()}
        self.fan_total = float(sum(v.sum() for v in fan.values()))
        self.neuron_total = float(sum(v.sum() for v in neurons.values()))

    def _hook(self, name: str):
        def hook(module, inputs, spikes):
            if not self._collecting:
                return
            s = spikes.sum(dim=(0, -1))  # (C, H, W): spikes per neuron over the batch and T
            self._sums.append(((s * self.fan[name]).sum(), (s * self.neurons[name]).sum()))
        return hook

    def start(self) -> None:
        self._sums = []
        self._collecting = True

    def term(self, n_images: int) -> torch.Tensor:
        self._collecting = False
        sops = torch.stack([a for a, _ in self._sums]).sum()
        spikes = torch.stack([b for _, b in self._sums]).sum()
        p_sop = sops / (n_images * self.T * self.fan_total)
        p_rate = spikes / (n_images * self.T * self.neuron_total)
        self.last = {"sop_fraction": float(p_sop), "firing_rate": float(p_rate)}
        return self.sop_weight * p_sop + self.rate_weight * p_rate

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
