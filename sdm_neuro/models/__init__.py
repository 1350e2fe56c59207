from .unet import DiffusionUNet, PreSpikeResBlock, SpikeDownsample, SpikeUpsample, build_model

__all__ = ["DiffusionUNet", "PreSpikeResBlock", "SpikeDownsample", "SpikeUpsample", "build_model"]
