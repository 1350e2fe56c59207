"""ANN-to-SNN conversion of the diffusion UNet (paper Sec. VI, Eqs. 21-24; Fast-SNN without
its signed neurons): quantised ANN -> IF neurons with reset by subtraction."""
from .convert import (NEXT_SYNAPSE, calibrate_clips, converted_card, convert_state, quantized_card,
                      quantized_state)
from .layer_error import layer_errors

__all__ = ["NEXT_SYNAPSE", "calibrate_clips", "converted_card", "convert_state", "quantized_card",
           "quantized_state", "layer_errors"]
