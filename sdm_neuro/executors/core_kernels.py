"""The arithmetic of one deployed population and its fan-in ("a core"), in numpy only.

Shared by the Lava process models (``lava_processes.population_core``) and the in-process
``PipelineSimulator``, so both run the same kernels (torch must not be called inside Lava
process models). Semantics are those of ``docs/export_format.md`` (format version 3):

* **Synapses, kernel stored once.** ``ConvSynapses`` keeps a projection's (C_out, C_in, k, k)
  kernel once, as a (C_in*k*k, C_out) matrix, plus a (H*W, k*k) table of which output pixel
  each (input pixel, kernel tap) reaches. Per step it builds the (H_out*W_out, C_in*k*k)
  input-patch matrix from the spikes alone (cost ~ spikes x k*k) and multiplies it by the
  kernel: as a scipy sparse matrix when few inputs spiked (cost ~ spikes x k*k x C_out, i.e.
  synaptic events) or dense (BLAS, cost ~ dense MACs) when that is cheaper. Both give the same
  integers in fixed point (float32 sums of integers stay exact below 2**24, checked at build).
* **Neuron** (Loihi CUBA with du = 4095, dv = 0: integrate-and-fire, instant current):
  fixed point ``a_in = wrap16(sum_p (sum mant*s) << weight_exp_p)``, ``u = a_in << 6``,
  ``v = sat24(v + u + bias)`` (TSM: ``v = sat24(v + ((u + bias) * gain_mant[t]) >> 8)``),
  spike when ``v > vth << 6``, then ``v = 0`` (reset "zero") or ``v -= vth << 6`` (reset
  "subtract", ANN-to-SNN conversion). Float: the same without widths and shifts.
* **Pipelined schedule.** Lava step k (0-based; Lava's ``time_step`` is k + 1). A core at depth
  d serves one image-evaluation per T-step slot; slot j covers steps d + jT .. d + jT + T - 1.
  At each slot start (``(k - d) % T == 0``) it takes one host message (active + bias, or idle)
  and sets v to its initial value ``v0`` (0, or theta / 2 for a converted model; 0 when idle). Spikes it emits at step k reach its destinations at step k + 1 (one hop)
  and are integrated ``delay`` steps later. An idle slot integrates nothing and cannot fire;
  spikes that arrive in an idle slot are counted (``outside_in``); there are none when the
  delays are balanced, which the tests check.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

A_IN_BITS = 16  # Loihi's synaptic input a_in: two's-complement wrap at 16 bits
ACT_SHIFT = 6
V_MAX = 2**23 - 1  # 24-bit saturating membrane voltage
GAIN_SHIFT = 8
EXACT_F32 = 2**24  # float32 sums of integers are exact below this magnitude
# Cost model that picks the event-driven or the dense product per projection and step, in ns,
# measured with ``benchmarks/bench_deploy.py --kernels`` on this 2-core machine (one BLAS
# thread): scipy sparse x dense ~0.5 ns per synaptic event plus ~150 us to build the patch
# matrix; dense (zeroed patch matrix + BLAS) ~0.12 ns per MAC plus ~50 us. Either choice gives
# the same result.
EVENT_NS, EVENT_FIXED_NS = 0.5, 150e3
DENSE_NS, DENSE_FIXED_NS = 0.12, 50e3


def wrap(x: np.ndarray, bits: int = A_IN_BITS) -> np.ndarray:
    """Two's-complement wrap of int64 values to ``bits`` bits."""
    half = 1 << (bits - 1)
    return ((x + half) & ((1 << bits) - 1)) - half


def out_hw(h: int, w: int, k: int, stride: int, padding: int, transposed: bool) -> tuple[int, int]:
    if transposed:
        return (h - 1) * stride - 2 * padding + k, (w - 1) * stride - 2 * padding + k
    return (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1


def tap_table(h: int, w: int, k: int, stride: int, padding: int, transposed: bool) -> tuple[np.ndarray, int, int]:
    """(H*W, k*k) output-pixel index reached by each (input pixel, tap), -1 where none.

    conv (cross-correlation, as torch.conv2d): out[o, y, x] += w[o, c, i, j] * in[c, y*s - p + i, x*s - p + j].
    convT (as torch.conv_transpose2d with weight w.transpose(0, 1)):
    out[o, y*s - p + i, x*s - p + j] += w[o, c, i, j] * in[c, y, x]. Same (out, in) kernel layout.
    """
    ho, wo = out_hw(h, w, k, stride, padding, transposed)
    y, x = np.divmod(np.arange(h * w), w)
    ky, kx = np.divmod(np.arange(k * k), k)
    if transposed:
        oy = y[:, None] * stride - padding + ky[None, :]
        ox = x[:, None] * stride - padding + kx[None, :]
        ok = np.ones_like(oy, dtype=bool)
    else:
        ny = y[:, None] + padding - ky[None, :]
        nx = x[:, None] + padding - kx[None, :]
        ok = (ny % stride == 0) & (nx % stride == 0)
        oy, ox = ny // stride, nx // stride
    ok &= (oy >= 0) & (oy < ho) & (ox >= 0) & (ox < wo)
    return np.where(ok, oy * wo + ox, -1).astype(np.int64), ho, wo


class ConvSynapses:
    """One projection's synapses with its kernel stored once.

    ``apply(spikes)``: spikes (C_in*H*W,) of the source (C order) -> synaptic input
    (C_out*H_out*W_out,) before the exponent shift: integers (float64) in fixed point
    (sum of mantissa x spike), floats in float mode.
    """

    def __init__(self, weight: np.ndarray, src_shape: tuple[int, int, int], stride: int, padding: int,
                 transposed: bool, fixed: bool):
        c_out, c_in, k, _ = weight.shape
        _, h, w = src_shape
        if src_shape[0] != c_in:
            raise ValueError(f"kernel has {c_in} input channels, source has {src_shape[0]}")
        self.taps, ho, wo = tap_table(h, w, k, stride, padding, transposed)
        self.c_in, self.c_out, self.kk, self.hw_in, self.hw_out = c_in, c_out, k * k, h * w, ho * wo
        self.out_shape = (c_out, ho, wo)
        wmat = np.ascontiguousarray(np.asarray(weight, np.float64).transpose(1, 2, 3, 0).reshape(c_in * k * k, c_out))
        # Fixed point: float32 products are exact while every partial sum stays below 2**24.
        exact32 = float(np.abs(wmat).sum(axis=0).max(initial=0.0)) < EXACT_F32
        self.dtype = np.float32 if fixed and exact32 else np.float64
        self.wmat = wmat.astype(self.dtype)
        self.dense_cost = DENSE_FIXED_NS + DENSE_NS * self.hw_out * c_in * k * k * c_out
        self.events = 0  # synaptic events of the last apply (patch entries x C_out)
        self.mode_counts = {"event": 0, "dense": 0, "none": 0}

    def patches(self, spikes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(spikes)
        c, pix = np.divmod(idx, self.hw_in)
        rows = self.taps[pix]
        cols = c[:, None] * self.kk + np.arange(self.kk)[None, :]
        ok = rows >= 0
        return rows[ok], cols[ok]

    def apply(self, spikes: np.ndarray, mode: str | None = None) -> np.ndarray | None:
        if not spikes.any():
            self.mode_counts["none"] += 1
            self.events = 0
            return None
        rows, cols = self.patches(spikes)
        self.events = rows.size * self.c_out
        shape = (self.hw_out, self.c_in * self.kk)
        if mode is None:
            mode = "event" if EVENT_FIXED_NS + EVENT_NS * self.events < self.dense_cost else "dense"
        self.mode_counts[mode] += 1
        if mode == "event":
            a = sp.csr_matrix((np.ones(rows.size, self.dtype), (rows, cols)), shape=shape)
            out = a @ self.wmat
        else:
            a = np.zeros(shape, self.dtype)
            a[rows, cols] = 1
            out = a @ self.wmat
        return np.asarray(out, dtype=np.float64).T.reshape(-1)


@dataclass
class CoreSpec:
    """Everything one core needs (plain numpy and Python values: picklable, torch-free)."""

    name: str
    shape: tuple[int, int, int]
    T: int
    depth: int
    kind: str  # "if" | "readout"
    fixed: bool
    vth: float  # fixed: vth mantissa (fires when v > vth << 6); float: threshold
    gain: np.ndarray | None  # (T,): fixed gain mantissas (8.8) or float gains; None = no TSM
    sources: list  # [(src name, src shape, weight (out, in, k, k), stride, padding, transposed, delay, exp)]
    reset: str = "zero"  # "zero": v = 0 after a spike; "subtract": v -= threshold
    v0: float = 0.0  # v at each slot start: fixed, v-units (vInitMant); float, model units (v_init)

    @property
    def size(self) -> int:
        c, h, w = self.shape
        return c * h * w


def n_words(n: int, T: int) -> int:
    """int32 words of a packed (n, T) spike record."""
    return (n * T + 31) // 32


def pack_spikes(rec: np.ndarray) -> np.ndarray:
    """(n, T) bool -> int32 words: ``np.packbits`` of the C-order bits, zero-padded."""
    bits = np.packbits(rec.reshape(-1))
    pad = (-bits.size) % 4
    return np.concatenate([bits, np.zeros(pad, np.uint8)]).view(np.int32)


def unpack_spikes(words: np.ndarray, n: int, T: int) -> np.ndarray:
    raw = np.ascontiguousarray(np.asarray(words).astype(np.int64).astype(np.int32)).view(np.uint8)
    return np.unpackbits(raw)[: n * T].reshape(n, T).astype(bool)


def message_size(spec: CoreSpec) -> tuple[int, int]:
    """(host -> core, core -> host) message lengths."""
    out = spec.size if spec.kind == "readout" else n_words(spec.size, spec.T)
    return spec.size + 1, out


class CoreState:
    """State and step function of one core (see the module docstring for the semantics)."""

    def __init__(self, spec: CoreSpec):
        self.spec = spec
        n = spec.size
        self.fixed = spec.fixed
        self.syn = [ConvSynapses(w, s_shape, st, pad, tr, spec.fixed) for _, s_shape, w, st, pad, tr, _, _ in spec.sources]
        for s, (name, *_rest) in zip(self.syn, spec.sources):
            if s.out_shape != tuple(spec.shape):
                raise ValueError(f"projection {name}->{spec.name} produces {s.out_shape}, population is {spec.shape}")
        self.delays = [int(src[6]) for src in spec.sources]
        self.scales = [float(2 ** int(src[7])) if spec.fixed else 1.0 for src in spec.sources]
        self.lines = [deque([None] * d) for d in self.delays]
        dt = np.int64 if spec.fixed else np.float64
        if spec.reset not in ("zero", "subtract"):
            raise ValueError(f"core {spec.name}: reset must be 'zero' or 'subtract', got {spec.reset!r}")
        self.v0 = int(spec.v0) if spec.fixed else float(spec.v0)
        self.v = np.zeros(n, dt)
        self.bias = np.zeros(n, dt)
        self.active = False
        self.record = np.zeros((n, spec.T), bool)
        self.outside_in = 0  # input spikes that arrived while no evaluation was in the slot
        self.outside_out = 0  # spikes emitted outside an active slot (0 by construction)
        self.events = 0  # synaptic events integrated (active slots)
        self.zeros = np.zeros(n, bool)

    def is_slot_start(self, k: int) -> bool:
        return (k - self.spec.depth) % self.spec.T == 0

    def step(self, k: int, inputs: list, message: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Lava step k: ``inputs`` are the source spikes received this step (emitted at k - 1), in
        ``spec.sources`` order; ``message`` the host message when ``is_slot_start(k)``.
        Returns (spikes emitted at k, message to the host or None)."""
        spec = self.spec
        due = []
        for line, s in zip(self.lines, inputs):
            line.append(s)
            due.append(line.popleft())
        phase = (k - spec.depth) % spec.T
        if self.is_slot_start(k):
            if message is None:
                raise RuntimeError(f"core {spec.name}: no host message at slot start (step {k})")
            self.active = bool(message[-1])
            if self.active and spec.kind == "if":
                self.bias[:] = message[:-1]
            self.v[:] = self.v0 if self.active else 0
        if not self.active:
            self.outside_in += sum(int(np.count_nonzero(s)) for s in due if s is not None)
            return self.zeros, None
        a = None
        for syn, s, scale in zip(self.syn, due, self.scales):
            if s is None:
                continue
            part = syn.apply(np.asarray(s) != 0)
            self.events += syn.events
            if part is not None:
                a = part * scale if a is None else a + part * scale
        if self.fixed:
            a_in = np.zeros(spec.size, np.int64) if a is None else wrap(a.astype(np.int64))
            u = a_in << ACT_SHIFT
        else:
            u = np.zeros(spec.size) if a is None else a
        out = None
        if spec.kind == "readout":
            self.v = self.v + u
            if self.fixed:
                self.v = np.clip(self.v, -V_MAX, V_MAX)
            if phase == spec.T - 1:
                out = self.v.copy()
            return self.zeros, out
        drive = u + self.bias
        if spec.gain is not None:
            drive = (drive * np.int64(spec.gain[phase])) >> GAIN_SHIFT if self.fixed else drive * float(spec.gain[phase])
        v = self.v + drive
        if self.fixed:
            v = np.clip(v, -V_MAX, V_MAX)
        thr = (int(spec.vth) << ACT_SHIFT) if self.fixed else spec.vth
        s = v > thr
        if spec.reset == "subtract":
            v[s] -= thr
        else:
            v[s] = 0
        self.v = v
        self.record[:, phase] = s
        if phase == spec.T - 1:
            out = pack_spikes(self.record)
        return s, out


def core_specs(graph, mode: str) -> list[CoreSpec]:
    """One ``CoreSpec`` per population of a scheduled (and, for fixed, quantised) graph."""
    fixed = mode == "fixed"
    specs = []
    for name, pop in graph.populations.items():
        sources = []
        for p in graph.incoming(name):
            w = p.weight_mant if fixed else p.weight
            sources.append((p.src, tuple(graph.populations[p.src].shape), np.asarray(w), int(p.stride),
                            int(p.padding), bool(p.transposed), int(p.delay), int(p.weight_exp) if fixed else 0))
        if pop.kind == "readout":
            vth = 0.0
        else:
            vth = float(pop.vth_mant) if fixed else float(pop.threshold)
        gain = None
        if pop.gain is not None:
            gain = np.asarray(pop.gain_mant, np.int64) if fixed else np.asarray(pop.gain, np.float64)
        v0 = int(pop.v_init_mant) if fixed else float(pop.v_init)
        specs.append(CoreSpec(name, tuple(pop.shape), graph.T, int(pop.depth), pop.kind, fixed, vth, gain, sources,
                              pop.reset, v0))
    return specs
