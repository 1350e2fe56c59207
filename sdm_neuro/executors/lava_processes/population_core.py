"""``PopulationCore``: one Lava process holding one or more populations, each with its fan-in,
as Loihi cores hold their neurons together with their incoming synapses.

Why a custom process: Lava has no delayed conv process (``lava.proc.conv.Conv`` has no delay;
delays exist only for ``DelayDense``/``DelaySparse``, whose weights are one stored synapse per
connection: 16 M for the 8x8 digits UNet). Delay balancing of a UNet needs both, and a
pipelined network needs a per-slot bias that the host can stream, which ``LIFReset``'s Vars
cannot take (``Var.set`` costs microseconds per element). So this process holds:

* ``members``: populations (``core_kernels.CoreSpec``) in topological order, each with its
  incoming projections (kernels stored once, ``core_kernels.ConvSynapses``), a spike delay line
  per projection, and its IF neurons with the pipelined T-step slots (``CoreState``);
* ``s_in0 .. s_in{MAX_INPUTS-1}``: the ``s_out`` vector of each other ``PopulationCore`` it
  reads from (unused ports have shape (1,) and are never connected); ``s_out``: the
  concatenated spikes of its members, sent one step after they are computed. Spikes between
  members of the same process take the same one-step hop (they are kept for one step), so the
  grouping never changes what is computed, only how many OS processes Lava runs;
* ``host_in{m}``/``host_out{m}`` per member: channels to and from the host
  (``flag_external_pipe``, as ``lava.proc.io.injector.Injector`` and ``extractor.Extractor``
  use): one message in per slot (bias of that slot's image, or idle), one record out per
  active slot (packed spikes, or the readout's voltage): one transfer, not one per element;
* ``outside``: (MAX_MEMBERS, 2) counters per member: spikes that arrived in an idle slot,
  spikes emitted outside one.

Two process models, both numpy only (torch inside Lava process models can hang): ``fixed_pt``
(bit-accurate Loihi integers) and ``floating_pt``; the arithmetic is ``core_kernels.CoreState``.
Each model limits BLAS to one thread: Lava runs every process as its own OS process.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from sdm_neuro.executors.core_kernels import CoreSpec, CoreState, message_size

MAX_INPUTS = 16  # other PopulationCore processes one process can read from
MAX_MEMBERS = 64  # populations per process


class PopulationCore(AbstractProcess):
    """Populations with their incoming projections (see the module docstring).

    Parameters:
        members: ``CoreSpec`` of each population, in topological order.
        wiring: per member, per incoming projection (in ``CoreSpec.sources`` order):
            ``("int", j)`` for member j of this process, or ``("ext", i, offset, size)`` for the
            slice ``[offset, offset + size)`` of the vector arriving at ``s_in{i}``.
        input_sizes: length of the vector at each used ``s_in`` port.
        buffer: host channel depth, in messages.
    """

    def __init__(self, *, members: list[CoreSpec], wiring: list[list[tuple]], input_sizes: list[int],
                 buffer: int = 4, name: str | None = None) -> None:
        if len(input_sizes) > MAX_INPUTS or len(members) > MAX_MEMBERS:
            raise ValueError(f"PopulationCore takes at most {MAX_INPUTS} input processes and {MAX_MEMBERS} "
                             f"populations, got {len(input_sizes)} and {len(members)}")
        super().__init__(members=members, wiring=wiring, name=name)
        for i in range(MAX_INPUTS):
            setattr(self, f"s_in{i}", InPort(shape=(int(input_sizes[i]) if i < len(input_sizes) else 1,)))
        self.s_out = OutPort(shape=(sum(m.size for m in members),))
        for j in range(MAX_MEMBERS):
            m_in, m_out = message_size(members[j]) if j < len(members) else (1, 1)
            setattr(self, f"host_in{j}", InPort(shape=(m_in,)))
            setattr(self, f"host_out{j}", OutPort(shape=(m_out,)))
            if j < len(members):
                getattr(self, f"host_in{j}").flag_external_pipe(buffer_size=buffer)
                getattr(self, f"host_out{j}").flag_external_pipe(buffer_size=buffer)
        self.outside = Var(shape=(MAX_MEMBERS, 2), init=np.zeros((MAX_MEMBERS, 2), np.int32))

    def in_port(self, i: int) -> InPort:
        return getattr(self, f"s_in{i}")

    def send_port(self, member: int):
        """Host side of member ``member``'s input channel (exists once the runtime is created)."""
        return getattr(self, f"host_in{member}").external_pipe_csp_send_port

    def recv_port(self, member: int):
        return getattr(self, f"host_out{member}").external_pipe_csp_recv_port


class _CoreModel(PyLoihiProcessModel):
    outside: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int8, precision=1)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except Exception:  # noqa: BLE001 - only a speed setting
            pass
        self.states = [CoreState(s) for s in proc_params["members"]]
        self.wiring = proc_params["wiring"]
        self.n_ext = 1 + max((w[1] for ws in self.wiring for w in ws if w[0] == "ext"), default=-1)
        self._prev = [np.zeros(s.spec.size, bool) for s in self.states]
        self._prev_out = np.zeros(sum(s.spec.size for s in self.states), np.int8)

    def run_spk(self) -> None:
        self.s_out.send(self._prev_out)
        ext = [getattr(self, f"s_in{i}").recv() for i in range(self.n_ext)]
        k = self.time_step - 1
        new = []
        for j, (state, wires) in enumerate(zip(self.states, self.wiring)):
            ins = [self._prev[w[1]] if w[0] == "int" else ext[w[1]][w[2]:w[2] + w[3]] for w in wires]
            msg = getattr(self, f"host_in{j}").recv() if state.is_slot_start(k) else None
            s, out = state.step(k, ins, msg)
            new.append(s)
            if out is not None:
                getattr(self, f"host_out{j}").send(out)
            self.outside[j, 0] = state.outside_in
            self.outside[j, 1] = state.outside_out
        self._prev = new
        self._prev_out = np.concatenate(new).astype(np.int8) if len(new) > 1 else new[0].astype(np.int8)


def _ports(cls, host_dtype):
    ann = dict(getattr(cls, "__annotations__", {}))
    for i in range(MAX_INPUTS):
        setattr(cls, f"s_in{i}", LavaPyType(PyInPort.VEC_DENSE, np.int8, precision=1))
        ann[f"s_in{i}"] = PyInPort
    for j in range(MAX_MEMBERS):
        setattr(cls, f"host_in{j}", LavaPyType(PyInPort.VEC_DENSE, host_dtype))
        setattr(cls, f"host_out{j}", LavaPyType(PyOutPort.VEC_DENSE, host_dtype))
        ann[f"host_in{j}"], ann[f"host_out{j}"] = PyInPort, PyOutPort
    cls.__annotations__ = ann
    return cls


@implements(proc=PopulationCore, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyPopulationCoreFixed(_CoreModel):
    """Bit-accurate: integer synaptic input, 24-bit voltage, host messages in int32."""


@implements(proc=PopulationCore, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPopulationCoreFloat(_CoreModel):
    """Floating point: float64 currents and voltages."""


_ports(PyPopulationCoreFixed, np.int32)
_ports(PyPopulationCoreFloat, np.float64)
