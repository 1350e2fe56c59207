from .if_neuron import RESETS, ATanSpike, IFNeuron, if_step, run_if
from .quantizer import levels, quantize, quantize_levels

__all__ = ["RESETS", "ATanSpike", "IFNeuron", "if_step", "run_if", "levels", "quantize", "quantize_levels"]
