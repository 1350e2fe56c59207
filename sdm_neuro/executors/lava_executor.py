"""Run an exported graph as a network of standard Lava processes on Lava's CPU backend.

Mapping (``LavaNetworkBuilder``):
  * each ``Population`` -> ``lava.proc.lif.process.LIFReset`` (du = 4095 i.e. instant current,
    dv = 0 i.e. no leak, hard reset), reset every ``W`` steps at the step its window starts;
  * each ``Projection`` -> ``Sparse`` (no extra delay) or ``DelaySparse`` (delay balancing),
    run by the bit-identical but faster process models of ``lava_processes.fast_sparse``;
    several projections into one population are summed by Lava's InPort;
  * each spiking population's ``s_out`` also feeds a ``PackedSpikeSink`` (a W-step spike
    recorder, like ``lava.proc.io.sink.RingBuffer`` but bit-packed: reading Vars back is slow
    per element), which records every spike (for verification and the energy report);
  * the readout population never fires; its voltage after the window is the summed current.

Timing: one network evaluation is a window of W = latency + T Lava steps. A population at
depth d is reset at window step d and sees model step t at window step d + t; spikes at
window steps outside [d, d + T) are outside the model's window (counted separately; they never
reach another population inside its window). The host sets every population's bias (first
conv output, time-embedding row) before each window with ``Var.set``.

Lava and its processes are imported lazily; no torch call happens inside a process model.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ..export.graph import Graph
from ..export.quantize import ACT_SHIFT
from .host import fixed_bias, host_inputs
from .sparse import projection_matrix


@contextlib.contextmanager
def _quiet_stdout():
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def import_lava() -> None:
    """Import Lava's runtime. Lava calls ``multiprocessing.set_start_method('fork')`` on import,
    which fails once anything (a tqdm bar, a DataLoader) has fixed the start method: so import
    it before such objects exist; if the method is already 'fork', Lava's call is harmless."""
    import multiprocessing as mp

    if mp.get_start_method(allow_none=True) == "fork":
        mp.set_start_method(None, force=True)  # let Lava set it again
    with _quiet_stdout():
        import lava.magma.core.run_configs  # noqa: F401
        import lava.proc.lif.process  # noqa: F401


@dataclass
class LavaWindowRecord:
    """One network evaluation on Lava: per population spike trains (n, T) inside the model
    window, and spike counts outside it."""

    trains: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, T) bool
    outside: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n,) spikes outside the window


class LavaNetworkBuilder:
    """Builds the Lava process graph of ``graph`` once; ``LavaExecutor`` runs it repeatedly."""

    def __init__(self, graph: Graph, mode: str = "fixed"):
        if mode not in ("fixed", "float"):
            raise ValueError("mode must be 'fixed' or 'float'")
        self.graph, self.mode = graph, mode

    def build(self):
        # Lava's Sparse process models clip CSR weights in place, in the forked process of each
        # projection, which makes scipy warn (SparseEfficiencyWarning, harmless): silence it here,
        # before Lava forks.
        warnings.filterwarnings("ignore", category=sp.SparseEfficiencyWarning)
        from lava.proc.lif.process import LIFReset
        from lava.proc.sparse.process import DelaySparse, Sparse

        from .lava_processes.packed_sink import PackedSpikeSink
        from .lava_processes.tsm_lif import TSMLIFReset

        g, fixed = self.graph, self.mode == "fixed"
        W = g.window
        neurons, sinks, synapses = {}, {}, {}
        for name, pop in g.populations.items():
            n = pop.size
            zeros = np.zeros(n, dtype=np.int32 if fixed else np.float64)
            if pop.kind == "readout":
                vth = pop.vth_mant if fixed else 1e30
            else:
                vth = pop.vth_mant if fixed else pop.threshold
            proc, extra = LIFReset, {}
            if pop.gain is not None:  # TSM: per-step input gain p[t] (see lava_processes.tsm_lif)
                proc, extra = TSMLIFReset, {"T": g.T, "gain": np.asarray(pop.gain_mant, np.int32) if fixed
                                            else np.asarray(pop.gain, np.float64)}
            neurons[name] = proc(shape=(n,), du=4095 if fixed else 1.0, dv=0 if fixed else 0.0, vth=vth,
                                 bias_mant=zeros.copy(), bias_exp=zeros.copy(), reset_interval=W,
                                 reset_offset=(1 + pop.depth) % W, name=name, **extra)
            if pop.kind == "if":
                sinks[name] = PackedSpikeSink(shape=(n,), window=W)
                neurons[name].s_out.connect(sinks[name].a_in)
        for proj in g.projections:
            src = g.populations[proj.src]
            m = projection_matrix(proj, src.shape, fixed)
            kw = {"weight_exp": int(proj.weight_exp), "num_weight_bits": 8} if fixed else {}
            if proj.delay == 0:
                syn = Sparse(weights=m, name=proj.name, **kw)
            else:
                syn = DelaySparse(weights=m, delays=int(proj.delay), max_delay=int(proj.delay), name=proj.name, **kw)
            neurons[proj.src].s_out.connect(syn.s_in)
            syn.a_out.connect(neurons[proj.dst].a_in)
            synapses[proj.name] = syn
        return neurons, synapses, sinks


class LavaExecutor:
    """Runs network evaluations on Lava (``Loihi2SimCfg``, ``fixed_pt`` or ``floating_pt``).

    Use as a context manager (or call ``close``): the Lava runtime is always stopped, also on
    errors and Ctrl-C, so no Lava processes are left behind.
    """

    def __init__(self, graph: Graph, mode: str = "fixed"):
        self.graph, self.mode = graph, mode
        import_lava()
        self._built = False
        self.steps_run = 0
        self.seconds_running = 0.0
        self.build_seconds = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _build(self, first_bias: dict[str, tuple[np.ndarray, np.ndarray]]):
        t0 = time.time()
        with _quiet_stdout():
            self.neurons, self.synapses, self.sinks = LavaNetworkBuilder(self.graph, self.mode).build()
            for name, (mant, exp) in first_bias.items():
                self.neurons[name].bias_mant.init = mant
                self.neurons[name].bias_exp.init = exp
            from lava.magma.core.run_configs import Loihi2SimCfg

            from .lava_processes.fast_sparse import FAST_MODELS

            self._cfg = Loihi2SimCfg(select_tag="fixed_pt" if self.mode == "fixed" else "floating_pt",
                                     exception_proc_model_map=dict(FAST_MODELS[self.mode]))
            self._anchor = next(iter(self.neurons.values()))
        self._built = True
        self.build_seconds = time.time() - t0

    def _biases(self, x: torch.Tensor, t: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        g = self.graph
        cur = host_inputs(g, x[None], torch.tensor([t]))
        out = {}
        for name, b in cur.items():
            pop = g.populations[name]
            if self.mode == "fixed":
                mant, exp = fixed_bias(pop, b[0])
                out[name] = (mant.reshape(-1).numpy().astype(np.int32), exp.reshape(-1).numpy().astype(np.int32))
            else:
                out[name] = (b[0].reshape(-1).numpy().astype(np.float64), np.zeros(pop.size))
        return out

    def run(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, LavaWindowRecord]:
        """One network evaluation of one image x_t (C, H, W) at diffusion timestep t."""
        from lava.magma.core.run_conditions import RunSteps

        g = self.graph
        W = g.window
        biases = self._biases(x, t)
        if not self._built:
            self._build(biases)
        else:  # Var.set costs microseconds per element: only send what changed
            for name, (mant, exp) in biases.items():
                last_mant, last_exp = self._last_bias[name]
                if not np.array_equal(mant, last_mant):
                    self.neurons[name].bias_mant.set(mant)
                if self.mode == "fixed" and not np.array_equal(exp, last_exp):
                    self.neurons[name].bias_exp.set(exp)
        self._last_bias = biases
        t0 = time.time()
        with _quiet_stdout():
            self._anchor.run(condition=RunSteps(num_steps=W, blocking=True), run_cfg=self._cfg)
        self.steps_run += W
        from .lava_processes.packed_sink import unpack

        rec = LavaWindowRecord()
        for name, sink in self.sinks.items():
            data = unpack(sink.data.get(), g.populations[name].size, W)  # (n, W), column j = window step j
            d = g.populations[name].depth
            rec.trains[name] = data[:, d:d + g.T]
            rec.outside[name] = data.sum(axis=1) - rec.trains[name].sum(axis=1)
        ro = g.populations[g.readout]
        v = np.asarray(self.neurons[g.readout].v.get(), dtype=np.float64)
        self.seconds_running += time.time() - t0
        if self.mode == "fixed":
            v = v / float(2 ** (ro.scale_exp + ACT_SHIFT))
        eps = v.reshape(ro.shape) / g.T * g.host.readout_scale + g.host.readout_bias[:, None, None]
        return torch.from_numpy(eps).float(), rec

    def close(self) -> None:
        if self._built:
            try:
                with _quiet_stdout():
                    self._anchor.stop()
            except Exception as exc:  # the runtime may already be down
                print(f"warning: stopping the Lava runtime: {exc}", file=sys.stderr)
            self._built = False

    def eps_model(self, record_into: list | None = None, progress=None):
        """``eps_model(x, t)`` for the samplers: evaluates each image of the batch in turn."""

        def f(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            outs = []
            for i in range(x.shape[0]):
                eps, rec = self.run(x[i].cpu(), int(tt[i]))
                outs.append(eps)
                if record_into is not None:
                    record_into.append(rec)
                if progress is not None:
                    progress.update(1)
            return torch.stack(outs).to(x.device)

        return f
