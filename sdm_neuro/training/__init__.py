from .trainer import TrainResult, recalibrate_batchnorm, train

__all__ = ["TrainResult", "recalibrate_batchnorm", "train"]
