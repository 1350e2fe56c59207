"""Energy formulas. Energies are in picojoules (pJ), operation counts are plain counts (ops).

* The paper's theoretical model (Cao et al., "Spiking Diffusion Models", Sec. V):
  Eq. 19  SOPs(l) = fr x T x FLOPs(l)       (FLOPs = MACs of one spiking step of layer l)
  Eq. 20  E = E_MAC x FLOPs(first conv) + E_AC x (sum of SOPs of every other conv / FC layer)
  with E_MAC = 4.6 pJ, E_AC = 0.9 pJ (45 nm CMOS, ``hw_profiles/cmos45nm.toml``).
* The ANN baseline: E = E_MAC x MACs.
* Neuromorphic hardware from counted events: ``energy.event_model`` (every event of the
  deployed run, labelled).

Divide by 1e9 for mJ (1 mJ = 1e9 pJ).
"""
from __future__ import annotations

from ..errors import SdmError
from ..hardware.profiles import HardwareProfile

PJ_PER_MJ = 1e9


def paper_sops(firing_rate: float, T: int, flops: float) -> float:
    """Eq. 19: synaptic operations (ops) of a layer, ``firing_rate x T x flops``.

    ``firing_rate``: mean spikes per input neuron per spiking step (0..1) of the layer's input;
    ``T``: spiking steps per network evaluation; ``flops``: MACs of one spiking step of the layer
    (``MacReport`` ``flops_per_step``).
    """
    if firing_rate < 0 or T < 0 or flops < 0:
        raise SdmError(f"paper_sops needs firing_rate, T, flops >= 0, got {firing_rate}, {T}, {flops}")
    return float(firing_rate) * T * float(flops)


def snn_energy_pj(first_conv_macs: float, sops: float, profile: HardwareProfile) -> float:
    """Eq. 20: energy (pJ) of one SNN evaluation, ``mac_pj x first_conv_macs + ac_pj x sops``.

    ``first_conv_macs``: MACs (ops) of the real-valued first conv (the encoder);
    ``sops``: synaptic operations (ops) of all spike-driven layers, summed (see ``paper_sops``).
    """
    if first_conv_macs < 0 or sops < 0:
        raise SdmError(f"snn_energy_pj needs op counts >= 0, got {first_conv_macs}, {sops}")
    return profile.mac_pj * float(first_conv_macs) + profile.ac_pj * float(sops)


def ann_energy_pj(macs: float, profile: HardwareProfile) -> float:
    """Energy (pJ) of one ANN evaluation: ``mac_pj x macs`` (all MACs, ops)."""
    if macs < 0:
        raise SdmError(f"ann_energy_pj needs macs >= 0, got {macs}")
    return profile.mac_pj * float(macs)
