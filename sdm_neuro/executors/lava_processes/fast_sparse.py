"""Faster process models for Lava's standard ``Sparse`` and ``DelaySparse`` processes.

Same processes, same arithmetic, bit for bit; only how the CPU computes it changes:

* Lava's ``DelaySparse`` models rebuild the delay-separated weight matrix (a vstack of one
  masked copy of the weights per delay value, plus an in-place CSR edit) at *every* time step;
  for a UNet projection with 10^5-10^6 synapses and delays up to 16 that costs seconds per
  step. The weights of these processes never change (no learning), so it is built once.
* Lava's ``Sparse`` models sum the columns of the active inputs (``weights[:, s].sum(1)``);
  column selection is slow on the CSR layout, so the weights are kept in CSC after their
  one-time clipping.

``FAST_MODELS`` maps each process to its replacement model per tag, for ``Loihi2SimCfg``'s
``exception_proc_model_map``. numpy/scipy only (no torch inside process models).
"""
from __future__ import annotations

import warnings

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.sparse.models import (PyDelaySparseModelBitAcc, PyDelaySparseModelFloat, PySparseModelBitAcc,
                                     PySparseModelFloat)
from lava.proc.sparse.process import DelaySparse, Sparse
from scipy.sparse import SparseEfficiencyWarning, csc_matrix

warnings.filterwarnings("ignore", category=SparseEfficiencyWarning)


class _CachedDelayMatrix:
    def calc_act(self, s_in) -> np.ndarray:
        if getattr(self, "_delay_wgts", None) is None:
            self._delay_wgts = self.get_delay_wgts_mat(self.weights, self.delays, self.a_buff.shape[-1] - 1).tocsr()
        return np.reshape(self._delay_wgts.dot(s_in), (self.a_buff.shape[-1], self.weights.shape[0])).T


@implements(proc=DelaySparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class FastDelaySparseBitAcc(_CachedDelayMatrix, PyDelaySparseModelBitAcc):
    """``PyDelaySparseModelBitAcc`` with the delay-weight matrix built once (after clipping)."""


@implements(proc=DelaySparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class FastDelaySparseFloat(_CachedDelayMatrix, PyDelaySparseModelFloat):
    """``PyDelaySparseModelFloat`` with the delay-weight matrix built once."""


class _ColumnMajor:
    def run_spk(self):
        if getattr(self, "weights_set", True) and not isinstance(self.weights, csc_matrix):
            self.weights = csc_matrix(self.weights)
        super().run_spk()


@implements(proc=Sparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class FastSparseBitAcc(_ColumnMajor, PySparseModelBitAcc):
    """``PySparseModelBitAcc`` with CSC weights after the one-time clipping."""


@implements(proc=Sparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class FastSparseFloat(_ColumnMajor, PySparseModelFloat):
    """``PySparseModelFloat`` with CSC weights."""


FAST_MODELS = {
    "fixed": {Sparse: FastSparseBitAcc, DelaySparse: FastDelaySparseBitAcc},
    "float": {Sparse: FastSparseFloat, DelaySparse: FastDelaySparseFloat},
}
