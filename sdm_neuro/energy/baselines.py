"""Fair 45 nm baselines with one memory model: the ANN twin at fp32, int8 and ceil(log2(T+1))
bits, and the SNN's counted SOPs plus host MACs, each with and without memory access.

Arithmetic (pJ per op) comes from ``hw_profiles/cmos45nm*.toml`` (Horowitz, ISSCC 2014). The
with-memory variants charge every access to a small (8 KB) on-chip SRAM at the profile's
``sram_access_pj_per_bit`` (Horowitz: ~10 pJ per 64-bit read, so 0.156 pJ per bit; writes
taken equal to reads), the same rule on both sides:

* ANN, per MAC: one weight read (``w`` bits) and one input-activation read (``a`` bits); per
  output activation: one write (``a`` bits). Partial sums stay in a register.
* SNN, per SOP: one weight read (8 bits: the export's weight mantissas); per active neuron
  update: one membrane-potential read and one write (24 bits, Loihi's membrane width); per host
  MAC: an fp32 weight and activation read. Spikes are events (no read per SOP).

Activation bits of the quantised twin (Yan et al., arXiv 2409.08290): ``ceil(log2(T+1))``, with
8-bit weights. Energies in pJ (mJ in dicts).
"""
from __future__ import annotations

import math

from ..errors import SdmError
from ..hardware.profiles import load_profile
from .event_model import DeployedEvents, Estimate
from .formulas import PJ_PER_MJ

WEIGHT_BITS_INT = 8  # weights of the quantised ANN twins and of the exported SNN (8-bit mantissas)
MEMBRANE_BITS = 24  # Loihi's membrane-potential width (Davies et al. 2018), read and written per update
FP32_BITS = 32
PROFILE_FP32, PROFILE_INT8, PROFILE_INT3 = "cmos45nm", "cmos45nm-int8", "cmos45nm-int3"
# The cmos45nm-int3 rule for other widths: an a x 8-bit array multiplier is a/8 of Horowitz's
# 8 x 8-bit one (0.2 pJ), plus an 8-bit add (0.03 pJ).
INT8_MULT_PJ, INT8_ADD_PJ = 0.2, 0.03

ANN_LEFT_OUT = ("operand reuse in registers or buffers: every MAC reads both operands from SRAM (an upper bound "
                "on on-chip traffic)", "DRAM traffic (weights or activations that do not fit on chip)",
                "norms, nonlinearities and bias adds", "control and static power")
SNN_LEFT_OUT = ("the read-modify-write of the target neuron's input current per SOP (taken to stay in a register)",
                "spike routing and the event queue", "DRAM traffic", "inactive neuron updates (a non-pipelined "
                "accelerator updates only the neurons of the evaluation it runs)", "host output writes",
                "control and static power")


def activation_bits(T: int) -> int:
    """Yan et al.'s fair activation width for an SNN of T steps: ceil(log2(T + 1)) bits."""
    if T < 1:
        raise SdmError(f"T must be >= 1, got {T}")
    return math.ceil(math.log2(T + 1))


def int_mac(bits: int) -> tuple[float, str]:
    """(pJ per MAC of a ``bits``-bit-activation x 8-bit-weight MAC, which profile or rule gives it)."""
    if bits == 8:
        return load_profile(PROFILE_INT8).mac_pj, PROFILE_INT8
    if bits == 3:
        return load_profile(PROFILE_INT3).mac_pj, PROFILE_INT3
    return (INT8_MULT_PJ * bits / 8 + INT8_ADD_PJ,
            f"the {PROFILE_INT3} rule at {bits} bits: 0.2 pJ x {bits}/8 + 0.03 pJ (estimate, no shipped profile)")


def ann_output_activations(ann_macs) -> int:
    """Output elements of every conv / linear layer of one ANN evaluation (batch 1): activation writes."""
    return int(sum(math.prod(layer.out_shape[1:]) * layer.calls for layer in ann_macs.layers))


def ann_estimate(macs: float, outputs: float, mac_pj: float, w_bits: int, a_bits: int, sram_pj_bit: float | None,
                 what: str) -> Estimate:
    comps = {"macs": mac_pj * macs}
    if sram_pj_bit is None:
        return Estimate(f"ANN twin, {what}: mac_pj x MACs (arithmetic only)", comps,
                        ["memory access (weight and activation reads and writes)", *ANN_LEFT_OUT[1:]])
    comps["weight_reads"] = sram_pj_bit * w_bits * macs
    comps["activation_reads"] = sram_pj_bit * a_bits * macs
    comps["activation_writes"] = sram_pj_bit * a_bits * outputs
    return Estimate(f"ANN twin, {what}, with memory: MACs + a {w_bits}-bit weight and {a_bits}-bit activation SRAM "
                    f"read per MAC + a {a_bits}-bit write per output", comps, list(ANN_LEFT_OUT))


def snn_estimate(ev: DeployedEvents, host_mac_pj: float, ac_pj: float, sram_pj_bit: float | None, what: str) -> Estimate:
    comps = {"host_macs": host_mac_pj * ev.host_macs, "synaptic_ops": ac_pj * (ev.sops + ev.sops_outside_window)}
    if sram_pj_bit is None:
        return Estimate(f"SNN, {what}: host MACs + counted SOPs (arithmetic only)", comps,
                        ["memory access", "neuron updates", "spikes", "control and static power"])
    comps["weight_reads"] = sram_pj_bit * WEIGHT_BITS_INT * (ev.sops + ev.sops_outside_window)
    comps["membrane_reads_writes"] = sram_pj_bit * 2 * MEMBRANE_BITS * ev.neuron_updates_active
    comps["host_operand_reads"] = sram_pj_bit * 2 * FP32_BITS * ev.host_macs
    return Estimate(f"SNN, {what}, with memory: + an 8-bit weight read per SOP, a {MEMBRANE_BITS}-bit membrane read "
                    "and write per active neuron update, fp32 operand reads per host MAC", comps,
                    ["neuron-update arithmetic (leak, threshold)", *SNN_LEFT_OUT])


def baselines_section(ann_macs, ev: DeployedEvents | None, T: int, evals_per_image: int) -> dict:
    """The report's ``baselines`` section: per evaluation and per image, each figure with its label,
    components and what it leaves out. ``ann_macs``: the ANN twin's MacReport (or None)."""
    fp32, int8 = load_profile(PROFILE_FP32), load_profile(PROFILE_INT8)
    sram = fp32.sram_access_pj_per_bit
    bits = activation_bits(T)
    b_mac, b_src = int_mac(bits)
    figs: dict[str, Estimate | None] = {}
    if ann_macs is not None:
        macs, outs = ann_macs.total_macs, ann_output_activations(ann_macs)
        for key, mac_pj, w, a, what in (("ann_fp32", fp32.mac_pj, FP32_BITS, FP32_BITS, f"fp32 ({PROFILE_FP32})"),
                                        ("ann_int8", int8.mac_pj, 8, 8, f"int8 ({PROFILE_INT8})"),
                                        ("ann_tbit", b_mac, WEIGHT_BITS_INT, bits,
                                         f"{bits}-bit activations x 8-bit weights ({b_src})")):
            figs[key] = ann_estimate(macs, outs, mac_pj, w, a, None, what)
            figs[f"{key}_memory"] = ann_estimate(macs, outs, mac_pj, w, a, sram, what)
    if ev is not None:
        for key, ac_pj, what in (("snn_fp32", fp32.ac_pj, f"fp32 adds ({PROFILE_FP32}, the paper's Eq. 20 figures)"),
                                 ("snn_int8", int8.ac_pj, f"8-bit adds ({PROFILE_INT8}); host MACs at fp32")):
            figs[key] = snn_estimate(ev, fp32.mac_pj, ac_pj, None, what)
            figs[f"{key}_memory"] = snn_estimate(ev, fp32.mac_pj, ac_pj, sram, what)
    return {"T": T, "activation_bits": bits, "activation_bits_rule": "ceil(log2(T + 1)) (Yan et al., arXiv 2409.08290)",
            "int_profile": b_src, "sram_access_pj_per_bit": sram,
            "sram_source": fp32.sources.get("sram_access_pj_per_bit"),
            "ann_output_activations": None if ann_macs is None else ann_output_activations(ann_macs),
            "per_evaluation": {k: v.to_dict() for k, v in figs.items()},
            "per_image_mj": {k: v.total_pj * evals_per_image / PJ_PER_MJ for k, v in figs.items()}}
