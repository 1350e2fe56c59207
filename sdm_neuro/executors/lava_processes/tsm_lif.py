"""A Lava neuron with the Temporal-wise Spiking Mechanism (TSM, paper Sec. IV-B, Eq. 16).

Why a custom process: TSM scales the whole input current of a neuron at spiking step t by a
learned gain p[t] (``v[t] = v[t-1] + p[t] * I[t]``). No standard Lava neuron has a
per-time-step input gain: ``LIF``/``LIFReset``/``LIFRefractory`` add ``a_in`` and a constant
bias, ``SigmaDelta``/``Sigma`` have no time-varying scale, and a ``Dense``/``Sparse`` weight is
fixed across steps (scaling it every step from the host would cost a ``Var.set`` per step per
projection, and could not scale the bias, which TSM must scale too). So ``TSMLIFReset`` is
``LIFReset`` plus a ``gain`` Var of shape (T,), indexed by the step inside the model window.

Timing (the same as ``LIFReset``): Lava's ``time_step`` starts at 1; the state (u, v) is reset
when ``time_step % reset_interval == reset_offset``, before that step's input is integrated.
The step inside the window is ``k = (time_step - reset_offset) % reset_interval`` (k = 0 at
the reset step); ``gain[k]`` applies for k < T; at k >= T (Lava steps outside the model's
T-step window: pipeline latency) the gain is 1.

Two process models, numpy only (torch calls inside Lava process models can hang):
  * ``fixed_pt`` (bit-accurate, Loihi-style integers): the LIF current update is Lava's
    (``u = decay(u) + (a_in << 6)`` with 24-bit wrap; ``du = 4095`` makes it instantaneous),
    then, with the 8.8 fixed-point gain ``gain_mant`` (value gain_mant / 256),
    ``v = clip(decay(v) + (((u + bias) * gain_mant[k]) >> 8), +-(2**23 - 1))`` (arithmetic,
    i.e. floor, right shift on int64); fire if ``v > vth << 6``; hard reset to 0. With du = 4095
    and dv = 0 this is exactly ``TorchExecutor``'s fixed-point TSM neuron.
  * ``floating_pt``: ``u = u (1 - du) + a_in``, ``v = v (1 - dv) + (u + bias) * gain[k]``.

Notes: Lava's compiler, looking for process models of ``TSMLIFReset``, executes every module
file of this folder as a standalone module, which is why this module lives in a folder of its
own; any remaining "Cannot import module" warnings for this process are filtered below. This
module imports only numpy and lava.
"""
from __future__ import annotations

import typing as ty
import warnings

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat
from lava.proc.lif.process import LIFReset

GAIN_SHIFT = 8  # 8.8 fixed-point gain (same constant as sdm_neuro.export.quantize.GAIN_SHIFT)

warnings.filterwarnings("ignore", message=r"Cannot import module .* when searching ProcessModels "
                                          r"for Process 'TSMLIFReset'")


class TSMLIFReset(LIFReset):
    """``LIFReset`` whose input current (synaptic input plus bias) is multiplied by ``gain[k]``
    at step k of each reset window (k < T), and by 1 at later steps.

    Parameters (beyond ``LIFReset``'s):
        gain: (T,) gains: integers ``round(p * 256)`` for ``fixed_pt``, floats p for ``floating_pt``.
        T: number of model steps per window that have a gain (the window is ``reset_interval``).
    """

    def __init__(self, *, shape: ty.Tuple[int, ...], gain: ty.Union[list, np.ndarray], T: int,
                 u=0, v=0, du=0, dv=0, bias_mant=0, bias_exp=0, vth=10, reset_interval: int = 1,
                 reset_offset: int = 0, name: ty.Optional[str] = None, log_config=None) -> None:
        super().__init__(shape=shape, u=u, v=v, du=du, dv=dv, bias_mant=bias_mant, bias_exp=bias_exp,
                         vth=vth, reset_interval=reset_interval, reset_offset=reset_offset, name=name,
                         log_config=log_config)
        gain = np.asarray(gain)
        if T < 1 or gain.shape != (T,):
            raise ValueError(f"TSMLIFReset: gain must have shape (T,) = ({T},), got {gain.shape}")
        self.gain = Var(shape=(T,), init=gain)
        self.proc_params["T"] = int(T)


def _window_step(time_step: int, reset_interval: int, reset_offset: int) -> int:
    """Steps since the last reset (0 at the reset step itself)."""
    return (time_step - reset_offset) % reset_interval


@implements(proc=TSMLIFReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyTSMLIFResetModelFixed(AbstractPyLifModelFixed):
    """Bit-accurate TSM LIF with reset (integer arithmetic, Loihi bit widths)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    gain: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.effective_vth = 0
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = proc_params["reset_offset"] % self.reset_interval
        self.T = proc_params["T"]

    def scale_threshold(self):
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self):
        return self.v > self.effective_vth

    def _decay(self, x: np.ndarray, decay_const: int) -> np.ndarray:
        d = np.int64(x) * (self.decay_unity - decay_const)
        return np.sign(d) * np.right_shift(np.abs(d), self.decay_shift)

    def subthr_dynamics(self, activation_in: np.ndarray):
        k = _window_step(self.time_step, self.reset_interval, self.reset_offset)
        g = np.int64(self.gain[k]) if k < self.T else np.int64(1 << GAIN_SHIFT)
        # Current: Lava's LIF update (24-bit wrap), instantaneous when du = 4095.
        curr = self._decay(self.u, self.du + self.ds_offset)
        curr = curr + np.left_shift(np.int64(activation_in), self.act_shift)
        m = np.int64(self.max_uv_val)
        curr = np.where(curr > m, curr - 2 * m, curr)
        curr = np.where(curr <= -m, curr + 2 * m, curr)
        self.u[:] = curr
        # Voltage: the gain multiplies synaptic input and bias; floor right shift.
        drive = np.right_shift((curr + np.int64(self.effective_bias)) * g, GAIN_SHIFT)
        volt = self._decay(self.v, self.dv + self.dm_offset) + drive
        self.v[:] = np.clip(volt, -m + 1, m - 1)

    def run_spk(self):
        a_in_data = self.a_in.recv()
        if (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
        self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()
        self.subthr_dynamics(activation_in=a_in_data)
        s_out = self.spiking_activation()
        self.reset_voltage(spike_vector=s_out)
        self.s_out.send(s_out)


@implements(proc=TSMLIFReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyTSMLIFResetModelFloat(AbstractPyLifModelFloat):
    """Floating-point TSM LIF with reset."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)
    gain: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = proc_params["reset_offset"] % self.reset_interval
        self.T = proc_params["T"]

    def spiking_activation(self):
        return self.v > self.vth

    def subthr_dynamics(self, activation_in: np.ndarray):
        k = _window_step(self.time_step, self.reset_interval, self.reset_offset)
        g = float(self.gain[k]) if k < self.T else 1.0
        self.u[:] = self.u * (1 - self.du)
        self.u[:] += activation_in
        self.v[:] = self.v * (1 - self.dv) + (self.u + self.bias_mant) * g

    def run_spk(self):
        a_in_data = self.a_in.recv()
        if (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
        self.subthr_dynamics(activation_in=a_in_data)
        s_out = self.spiking_activation()
        self.reset_voltage(spike_vector=s_out)
        self.s_out.send(s_out)
