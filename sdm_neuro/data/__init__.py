from .datasets import DATASETS, load_dataset

__all__ = ["DATASETS", "load_dataset"]
