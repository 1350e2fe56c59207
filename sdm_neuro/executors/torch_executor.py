"""Batched PyTorch executor of an exported graph (CPU or CUDA).

``mode="fixed"`` reproduces Lava's ``fixed_pt`` Loihi arithmetic exactly (integers carried
in float64, which is exact below 2**53): 16-bit synaptic input, ``u = a_in << 6``, saturating
24-bit voltage, ``v > vth << 6``, hard reset (or reset by subtraction from ``v0 = vInitMant``
for a converted model), 13+3-bit biases. ``mode="float"`` is the same
network in real arithmetic (matches the trained model up to float rounding).

It runs the synchronous model (every population sees spiking step t at step t), which is what
the Lava network computes once its delays are balanced; it is also the fast "GPU run" of the
deployed network.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..export.graph import Graph
from ..export.quantize import A_IN_MAX, A_IN_MIN, ACT_SHIFT, GAIN_SHIFT, V_MAX
from .host import fixed_bias, host_inputs


@dataclass
class RunRecord:
    """Per-population spike counts of one batch: name -> (N, T) int64 (spikes per image and step)."""

    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    per_neuron: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (C*H*W,) summed over N, T
    trains: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N, C*H*W, T) bool, if kept
    overflow: int = 0  # neuron-steps whose summed synaptic input left [-2^15, 2^15 - 1] and wrapped (fixed point)


class TorchExecutor:
    def __init__(self, graph: Graph, mode: str = "fixed", device: str | torch.device = "cpu",
                 float_dtype: torch.dtype = torch.float32):
        if mode not in ("fixed", "float"):
            raise ValueError("mode must be 'fixed' or 'float'")
        if mode == "fixed" and not graph.meta.get("quantized"):
            raise ValueError("fixed-point execution needs a quantised graph")
        self.graph, self.mode, self.device = graph, mode, torch.device(device)
        dt = torch.float64 if mode == "fixed" else float_dtype  # float mode: float64 for exact comparisons
        self.dtype = dt
        self.weights = {}
        for p in graph.projections:
            if mode == "fixed":
                w = torch.from_numpy(p.weight_mant).double() * 2.0**p.weight_exp
            else:
                w = torch.from_numpy(p.weight).float()
            self.weights[p.name] = w.to(self.device, dt)

    def _synaptic(self, name: str, spikes: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for p in self.graph.incoming(name):
            s, w = spikes[p.src], self.weights[p.name]
            if p.transposed:
                a = F.conv_transpose2d(s, w.transpose(0, 1), stride=p.stride, padding=p.padding)
            else:
                a = F.conv2d(s, w, stride=p.stride, padding=p.padding)
            total = a if total is None else total + a
        return total

    @torch.no_grad()
    def run(self, x: torch.Tensor, timesteps: torch.Tensor, keep_trains: bool = False) -> tuple[torch.Tensor, RunRecord]:
        """One network evaluation: x_t (N, C, H, W), timesteps (N,) -> (eps (N, C, H, W), record)."""
        g, dt, dev = self.graph, self.dtype, self.device
        x = x.to(dev)
        n = x.shape[0]
        biases = host_inputs(g, x, timesteps.to(dev))
        fixed = self.mode == "fixed"
        state, bias_eff, vth = {}, {}, {}
        for name, pop in g.populations.items():
            state[name] = torch.zeros(n, *pop.shape, dtype=dt, device=dev)
            if pop.kind != "if":
                continue
            state[name] += float(pop.v_init_mant) if fixed else pop.v_init
            if fixed:
                mant, exp = fixed_bias(pop, biases[name])
                bias_eff[name] = mant * 2.0**exp
                vth[name] = float(pop.vth_mant * 2**ACT_SHIFT)
            else:
                bias_eff[name] = biases[name].to(dt)
                vth[name] = pop.threshold
        rec = RunRecord()
        counts = {name: [] for name, p in g.populations.items() if p.kind == "if"}
        per_neuron = {name: 0.0 for name in counts}
        trains = {name: [] for name in counts} if keep_trains else None
        for t in range(g.T):
            spikes: dict[str, torch.Tensor] = {}
            for name, pop in g.populations.items():
                a = self._synaptic(name, spikes)
                if fixed and a is not None:
                    over = (a > A_IN_MAX) | (a < A_IN_MIN)  # outside int16 [-32768, 32767]
                    if over.any():  # Lava's int16 a_in wraps around
                        rec.overflow += int(over.sum())
                        a = torch.remainder(a + 2**15, 2**16) - 2**15
                if pop.kind == "readout":
                    u = a * 2**ACT_SHIFT if fixed else a
                    state[name] = state[name] + u
                    if fixed:
                        state[name] = state[name].clamp(-V_MAX, V_MAX)
                    continue
                u = (a * 2**ACT_SHIFT if fixed else a) if a is not None else 0.0
                u = u + bias_eff[name]
                if pop.gain is not None:
                    if fixed:
                        u = torch.floor(u * float(pop.gain_mant[t]) / 2**GAIN_SHIFT)
                    else:
                        u = u * float(pop.gain[t])
                v = state[name] + u
                if fixed:
                    v = v.clamp(-V_MAX, V_MAX)
                s = v > vth[name]
                state[name] = torch.where(s, v - vth[name] if pop.reset == "subtract" else torch.zeros_like(v), v)
                spikes[name] = s.to(dt)
                counts[name].append(s.flatten(1).sum(1))
                per_neuron[name] = per_neuron[name] + s.flatten(1).sum(0).double()
                if keep_trains:
                    trains[name].append(s.flatten(1))
        ro = g.populations[g.readout]
        v = state[g.readout]
        if fixed:
            v = v / float(2 ** (ro.scale_exp + ACT_SHIFT))
        eps = v / g.T * g.host.readout_scale + torch.from_numpy(g.host.readout_bias).to(dev, dt)[None, :, None, None]
        rec.spikes = {k: torch.stack(c, dim=1).long().cpu() for k, c in counts.items()}
        rec.per_neuron = {k: v.cpu() for k, v in per_neuron.items()}
        if keep_trains:
            rec.trains = {k: torch.stack(c, dim=-1).cpu() for k, c in trains.items()}
        return eps.float(), rec

    def eps_model(self, record_into: list | None = None):
        """An ``eps_model(x, t)`` callable for the samplers; appends each ``RunRecord`` if asked."""

        def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            eps, rec = self.run(x, t)
            if record_into is not None:
                record_into.append(rec)
            return eps.to(x.device)

        return f
