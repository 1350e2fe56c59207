"""Run an exported graph as a pipelined network of Lava processes on Lava's CPU backend.

Mapping (``LavaNetworkBuilder``): each ``Population`` with its incoming projections is a core
(as a Loihi core holds its neurons and their fan-in synapses), and each core lives in a
``lava_processes.population_core.PopulationCore`` process: one process per population
(``processes=0``), or contiguous groups of about equal work in ``processes`` processes (Lava's
per-step cost is ~0.5 ms per process on this machine, ``bench_deploy.py --sync``). Spikes
between processes go through Lava connections (``s_out`` -> ``s_in``), each projection's
kernel is stored once in its destination core with its delay line; the grouping does not
change what is computed. The readout population is a core too; it never fires.

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
from ..interrupts import deferred_sigint
from .core_kernels import core_specs, unpack_spikes
from .pipeline import BatchRecord, batch_events, decode_readout, host_messages, idle_message, run_slots


@contextlib.contextmanager
def _quiet_stdout():
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def import_lava() -> None:
    """Import Lava's runtime. Lava calls ``multiprocessing.set_start_method('fork')`` on import,
    which fails once anything (a tqdm bar, a DataLoader) has fixed the start method: so import
    it before such objects exist; if the method is already 'fork', Lava's call is harmless.
    Without the ``lava`` extra: an ``SdmError`` saying what to install and what runs instead."""
    import multiprocessing as mp

    from ..errors import SdmError
    from ..lava_extra import lava_nc_available, needs_lava

    instead = "`sdm-neuro sample EXPORT --executor fixed` runs the same fixed-point arithmetic (PyTorch executor)"
    if not lava_nc_available():
        raise SdmError(needs_lava("simulate EXPORT (a Lava run)", instead))
    if mp.get_start_method(allow_none=True) == "fork":
        mp.set_start_method(None, force=True)  # let Lava set it again
    with _quiet_stdout():
        import lava.magma.core.process.process  # noqa: F401  (imports the runtime, which sets 'fork')
        import lava.magma.core.run_configs  # noqa: F401


def population_cost(spec) -> float:
    """Work estimate of one population per step: dense MACs of its fan-in plus its neurons."""
    cost = float(spec.size)
    for _, src_shape, w, stride, padding, transposed, _, _ in spec.sources:
        c_out, c_in, k, _ = np.shape(w)
        cost += spec.size // c_out * c_in * k * k * c_out
    return cost


def partition(specs: list, processes: int) -> list[list[int]]:
    """Split populations (topological order) into at most ``processes`` contiguous groups of
    about equal work (``population_cost``); ``processes <= 0`` or >= the count: one each."""
    n = len(specs)
    if processes <= 0 or processes >= n:
        return [[i] for i in range(n)]
    costs = np.array([population_cost(s) for s in specs])
    mid = (np.cumsum(costs) - costs / 2) / costs.sum()  # where each population's work lies, 0..1
    gid = np.minimum((mid * processes).astype(int), processes - 1)
    return [list(np.flatnonzero(gid == g)) for g in range(processes) if (gid == g).any()]


class LavaNetworkBuilder:
    """Builds the Lava process graph of ``graph``: ``PopulationCore`` processes, each holding
    one population (``processes = 0``, the default) or a contiguous group of populations with
    their fan-in; spikes between groups go through Lava connections."""

    def __init__(self, graph: Graph, mode: str = "fixed", buffer: int = 4, processes: int = 0):
        if mode not in ("fixed", "float"):
            raise ValueError("mode must be 'fixed' or 'float'")
        self.graph, self.mode, self.buffer, self.processes = graph, mode, buffer, processes

    def build(self) -> tuple[list, list[tuple[int, int]]]:
        """Returns (processes, place) where ``place[c] = (process index, member index)`` of
        population c (graph order)."""
        from .lava_processes.population_core import PopulationCore

        specs = core_specs(self.graph, self.mode)
        index = {s.name: i for i, s in enumerate(specs)}
        groups = partition(specs, self.processes)
        place = {}
        offset = {}
        for gi, members in enumerate(groups):
            off = 0
            for mj, c in enumerate(members):
                place[c] = (gi, mj)
                offset[c] = off
                off += specs[c].size
        procs, links = [], []
        for gi, members in enumerate(groups):
            ext_groups: list[int] = []
            wiring = []
            for c in members:
                wires = []
                for src in specs[c].sources:
                    sc = index[src[0]]
                    sg, sm = place[sc]
                    if sg == gi:
                        wires.append(("int", sm))
                    else:
                        if sg not in ext_groups:
                            ext_groups.append(sg)
                        wires.append(("ext", ext_groups.index(sg), offset[sc], specs[sc].size))
                wiring.append(wires)
            sizes = [sum(specs[c].size for c in groups[sg]) for sg in ext_groups]
            name = specs[members[0]].name if len(members) == 1 else f"group{gi}"
            procs.append(PopulationCore(members=[specs[c] for c in members], wiring=wiring, input_sizes=sizes,
                                        buffer=self.buffer, name=name))
            links.append(ext_groups)
        for gi, ext_groups in enumerate(links):
            for i, sg in enumerate(ext_groups):
                procs[sg].s_out.connect(procs[gi].in_port(i))
        return procs, [place[c] for c in range(len(specs))]


class LavaExecutor:
    """Runs batches of network evaluations on Lava (``Loihi2SimCfg``, ``fixed_pt``/``floating_pt``).

    Use as a context manager (or call ``close``): the Lava runtime is always stopped, also on
    errors and Ctrl-C, so no Lava processes are left behind.
    """

    def __init__(self, graph: Graph, mode: str = "fixed", buffer: int = 4, processes: int | None = None):
        """``processes``: Lava processes to spread the populations over; None: one per CPU core
        (``os.cpu_count()``), 0: one per population."""
        self.graph, self.mode, self.buffer = graph, mode, buffer
        self.n_processes = (os.cpu_count() or 1) if processes is None else processes
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
        """Lava processes of the network (known once built)."""
        return len(self.cores) if self._built else 0

    def _build(self) -> None:
        t0 = time.perf_counter()
        with deferred_sigint(), _quiet_stdout():
            self.cores, self.place = LavaNetworkBuilder(self.graph, self.mode, self.buffer, self.n_processes).build()
            self._outside_prev = np.zeros((len(self.place), 2), np.int64)
            from lava.magma.core.run_configs import Loihi2SimCfg

            self._cfg = Loihi2SimCfg(select_tag="fixed_pt" if self.mode == "fixed" else "floating_pt")
            self._anchor = self.cores[0]  # from here on, close() stops whatever runtime was started
            self._built = True
            self._anchor.create_runtime(run_cfg=self._cfg)
        self.build_seconds = time.perf_counter() - t0

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
        # Ctrl-C during the run: the cores wait for their slot messages, so the run is finished
        # with idle slots (records dropped), then KeyboardInterrupt is raised and the runtime can
        # stop cleanly.
        with deferred_sigint() as interrupted:
            self._started = True
            with _quiet_stdout():
                self._anchor.run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=self._cfg)
            live = set()  # (core, image) slots sent with their image; only these return a record
            for e in events:
                (pi, mj), name = self.place[e.core], names[e.core]
                core, size = self.cores[pi], g.populations[name].size
                if e.kind == 0:
                    if e.image >= 0 and not interrupted:
                        live.add((e.core, e.image))
                        core.send_port(mj).send(msgs[name][e.image])
                    else:
                        core.send_port(mj).send(idle_message(size))
                elif (e.core, e.image) in live:
                    data = core.recv_port(mj).recv()
                    if name == g.readout:
                        v_out[e.image] = data
                    else:
                        rec.trains.setdefault(name, np.zeros((n_img, size, T), bool))[e.image] = \
                            unpack_spikes(data, size, T)
            with _quiet_stdout():
                self._anchor.wait()
            self.steps_run += steps  # also when interrupted: the run did complete its steps
        rec.seconds = time.perf_counter() - t0
        self.seconds_running += rec.seconds
        per_proc = [np.asarray(c.outside.get(), np.int64) for c in self.cores]
        outside = np.array([per_proc[pi][mj] for pi, mj in self.place])
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
                if not self._started:  # Lava's stop() waits forever on a runtime that never ran:
                    self.run_batch(torch.zeros(0, *self.graph.image_shape), torch.zeros(0, dtype=torch.long))
            except Exception as exc:  # noqa: BLE001 - stop() below is what matters
                print(f"warning: idle run before stopping the Lava runtime: {exc}", file=sys.stderr)
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
