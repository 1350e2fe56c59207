"""Executors of an exported graph: ``TorchExecutor`` (batched, CPU/CUDA, float or Loihi fixed
point) and ``LavaExecutor`` (Lava processes on the CPU backend). Both consume the same
``Graph`` read from the export file."""
