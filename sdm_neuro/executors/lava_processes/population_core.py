"""``PopulationCore``: one Lava process per population with its fan-in, as a Loihi core holds
its neurons together with their incoming synapses.

Why a custom process: Lava has no delayed conv process (``lava.proc.conv.Conv`` has no delay;
delays exist only for ``DelayDense``/``DelaySparse``, whose weights are one stored synapse per
connection: 16 M for the 8x8 digits UNet). Delay balancing of a UNet needs both, and a
pipelined network needs a per-slot bias that the host can stream, which ``LIFReset``'s Vars
cannot take (``Var.set`` costs microseconds per element). So this process holds:

* ``s_in0 .. s_in{MAX_FAN_IN-1}``: spikes of each source population (unused ports have shape
  (1,) and are never connected); ``s_out``: its own spikes, sent one step after they are
  computed (one Lava step per hop, as every Lava synapse process adds);
* the incoming projections with their kernels stored once (``core_kernels.ConvSynapses``) and
  a spike delay line per projection;
* the IF neurons (Loihi CUBA, du = 4095, dv = 0) with the pipelined T-step slots;
* ``host_in``/``host_out``: channels to and from the host (``flag_external_pipe``, as
  ``lava.proc.io.injector.Injector`` and ``extractor.Extractor`` use): one message in per slot
  (bias of that slot's image, or idle), one record out per active slot (packed spikes, or the
  readout's voltage). A message costs one channel transfer, not one per element;
* ``outside``: (2,) counters: spikes that arrived in an idle slot, spikes emitted outside one.

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

MAX_FAN_IN = 16


class PopulationCore(AbstractProcess):
    """One population and its incoming conv/convT projections (see the module docstring).

    Parameters:
        spec: the ``CoreSpec`` (shape, depth, T, threshold, TSM gain, incoming projections).
        buffer: host channel depth, in messages.
    """

    def __init__(self, *, spec: CoreSpec, buffer: int = 4, name: str | None = None) -> None:
        if len(spec.sources) > MAX_FAN_IN:
            raise ValueError(f"population {spec.name} has {len(spec.sources)} incoming projections; "
                             f"PopulationCore takes at most {MAX_FAN_IN}")
        super().__init__(spec=spec, name=name)
        for i in range(MAX_FAN_IN):
            n_src = int(np.prod(spec.sources[i][1])) if i < len(spec.sources) else 1
            setattr(self, f"s_in{i}", InPort(shape=(n_src,)))
        self.s_out = OutPort(shape=(spec.size,))
        m_in, m_out = message_size(spec)
        self.host_in = InPort(shape=(m_in,))
        self.host_in.flag_external_pipe(buffer_size=buffer)
        self.host_out = OutPort(shape=(m_out,))
        self.host_out.flag_external_pipe(buffer_size=buffer)
        self.outside = Var(shape=(2,), init=np.zeros(2, np.int32))

    def in_port(self, i: int) -> InPort:
        return getattr(self, f"s_in{i}")


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
        self.state = CoreState(proc_params["spec"])
        self.n_src = len(self.state.spec.sources)
        self._prev = np.zeros(self.state.spec.size, np.int8)

    def run_spk(self) -> None:
        self.s_out.send(self._prev)
        ins = [getattr(self, f"s_in{i}").recv() for i in range(self.n_src)]
        k = self.time_step - 1
        msg = self.host_in.recv() if self.state.is_slot_start(k) else None
        s, out = self.state.step(k, ins, msg)
        self._prev = s.astype(np.int8)
        if out is not None:
            self.host_out.send(out)
        self.outside[0] = self.state.outside_in
        self.outside[1] = self.state.outside_out


def _ports(cls, host_dtype):
    for i in range(MAX_FAN_IN):
        setattr(cls, f"s_in{i}", LavaPyType(PyInPort.VEC_DENSE, np.int8, precision=1))
    cls.host_in = LavaPyType(PyInPort.VEC_DENSE, host_dtype)
    cls.host_out = LavaPyType(PyOutPort.VEC_DENSE, host_dtype)
    cls.__annotations__ = {**getattr(cls, "__annotations__", {}),
                           **{f"s_in{i}": PyInPort for i in range(MAX_FAN_IN)},
                           "host_in": PyInPort, "host_out": PyOutPort}
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
