"""Run an exported graph as a pipelined network of Lava processes on Lava's CPU backend.

Mapping (``LavaNetworkBuilder``): each ``Population`` with its incoming projections becomes one
``lava_processes.population_core.PopulationCore`` (as a Loihi core holds its neurons and their
fan-in synapses); each projection is a Lava connection from the source core's ``s_out`` to one
``s_in`` port of the destination core, which stores the projection's kernel once and its delay
line. The readout population is a core too; it never fires.

Timing (``executors.pipeline``): one Lava step per hop; a core at depth d serves one
image-evaluation per T-step slot, resetting at steps k = d (mod T). ``run_batch`` streams a
batch of N evaluations through the network in N + ceil(latency / T) slots, sending each core
one host message per slot (the bias of that slot's image, or idle) and receiving one record
per active slot (packed spikes; the readout's voltage). Nothing integrates in an idle slot,
so no spike is emitted outside a model window; input spikes arriving in an idle slot are
counted per core (``outside``) and are 0 when the schedule is right.

Lava and its processes are imported lazily; no torch call happens inside a process model. The
runtime is stopped on errors and Ctrl-C (``close``; use the executor as a context manager).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np
import torch

from ..export.graph import Graph
from .core_kernels import core_specs, unpack_spikes
from .pipeline import BatchRecord, batch_events, decode_readout, host_messages, idle_message, run_slots


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
        import lava.magma.core.process.process  # noqa: F401  (imports the runtime, which sets 'fork')
        import lava.magma.core.run_configs  # noqa: F401


class LavaNetworkBuilder:
    """Builds the Lava process graph of ``graph``: one ``PopulationCore`` per population."""

    def __init__(self, graph: Graph, mode: str = "fixed", buffer: int = 4):
        if mode not in ("fixed", "float"):
            raise ValueError("mode must be 'fixed' or 'float'")
        self.graph, self.mode, self.buffer = graph, mode, buffer

    def build(self) -> list:
        from .lava_processes.population_core import PopulationCore

        specs = core_specs(self.graph, self.mode)
        cores = {s.name: PopulationCore(spec=s, buffer=self.buffer, name=s.name) for s in specs}
        for s in specs:
            for i, src in enumerate(s.sources):
                cores[src[0]].s_out.connect(cores[s.name].in_port(i))
        return [cores[s.name] for s in specs]


class LavaExecutor:
    """Runs batches of network evaluations on Lava (``Loihi2SimCfg``, ``fixed_pt``/``floating_pt``).

    Use as a context manager (or call ``close``): the Lava runtime is always stopped, also on
    errors and Ctrl-C, so no Lava processes are left behind.
    """

    def __init__(self, graph: Graph, mode: str = "fixed", buffer: int = 4):
        self.graph, self.mode, self.buffer = graph, mode, buffer
        import_lava()
        self._built = False
        self._started = False
        self.steps_run = 0
        self.seconds_running = 0.0
        self.build_seconds = 0.0
        self._outside_prev = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def processes(self) -> int:
        return len(self.graph.populations)

    def _build(self) -> None:
        t0 = time.perf_counter()
        with _quiet_stdout():
            self.cores = LavaNetworkBuilder(self.graph, self.mode, self.buffer).build()
            from lava.magma.core.run_configs import Loihi2SimCfg

            self._cfg = Loihi2SimCfg(select_tag="fixed_pt" if self.mode == "fixed" else "floating_pt")
            self._anchor = self.cores[0]
            self._anchor.create_runtime(run_cfg=self._cfg)
        self._built = True
        self.build_seconds = time.perf_counter() - t0
        self._outside_prev = np.zeros((len(self.cores), 2), np.int64)

    def run_batch(self, x: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, BatchRecord]:
        """N image-evaluations x_t (N, C, H, W) at diffusion timesteps (N,), pipelined."""
        from lava.magma.core.run_conditions import RunSteps

        g, T = self.graph, self.graph.T
        x = x.detach().cpu()
        n_img = x.shape[0]
        msgs = host_messages(g, x, timesteps.cpu(), self.mode)
        if not self._built:
            self._build()
        names = list(g.populations)
        j0 = self.steps_run // T
        steps = run_slots(g, n_img) * T
        events = batch_events(g, j0, n_img)
        rec = BatchRecord(steps=steps)
        ro_size = g.populations[g.readout].size
        v_out = np.zeros((n_img, ro_size))
        t0 = time.perf_counter()
        with _quiet_stdout():
            self._anchor.run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=self._cfg)
        self._started = True
        try:
            for e in events:
                core, name = self.cores[e.core], names[e.core]
                size = g.populations[name].size
                if e.kind == 0:
                    msg = msgs[name][e.image] if e.image >= 0 else idle_message(size)
                    core.host_in.external_pipe_csp_send_port.send(msg)
                else:
                    data = core.host_out.external_pipe_csp_recv_port.recv()
                    if name == g.readout:
                        v_out[e.image] = data
                    else:
                        rec.trains.setdefault(name, np.zeros((n_img, size, T), bool))[e.image] = \
                            unpack_spikes(data, size, T)
        finally:
            with _quiet_stdout():
                self._anchor.wait()
        rec.seconds = time.perf_counter() - t0
        self.seconds_running += rec.seconds
        self.steps_run += steps
        outside = np.array([np.asarray(c.outside.get(), np.int64) for c in self.cores])
        delta = outside - self._outside_prev
        self._outside_prev = outside
        rec.outside_in = {n: int(d[0]) for n, d in zip(names, delta)}
        rec.outside_out = {n: int(d[1]) for n, d in zip(names, delta)}
        return decode_readout(g, v_out, self.mode), rec

    def run(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, BatchRecord]:
        """One image-evaluation x_t (C, H, W) at diffusion timestep t (a batch of one); the
        record's trains are (n, T) per population."""
        eps, rec = self.run_batch(x[None], torch.tensor([int(t)]))
        rec.trains = {k: v[0] for k, v in rec.trains.items()}
        return eps[0], rec

    def close(self) -> None:
        if self._built:
            try:
                with _quiet_stdout():
                    self._anchor.stop()
            except Exception as exc:  # the runtime may already be down
                print(f"warning: stopping the Lava runtime: {exc}", file=sys.stderr)
            self._built = False

    def eps_model(self, record_into: list | None = None, progress=None):
        """``eps_model(x, t)`` for the samplers: the whole batch streams through the pipeline."""

        def f(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            eps, rec = self.run_batch(x, tt)
            if record_into is not None:
                record_into.append(rec)
            if progress is not None:
                progress.update(x.shape[0])
            return eps.to(x.device)

        return f
