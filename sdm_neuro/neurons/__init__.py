from .if_neuron import ATanSpike, IFNeuron, if_step, run_if

__all__ = ["ATanSpike", "IFNeuron", "if_step", "run_if"]
