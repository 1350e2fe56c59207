"""Executors of an exported graph, all reading the same ``Graph`` from the export file:
``TorchExecutor`` (batched, synchronous, CPU/CUDA, float or Loihi fixed point),
``PipelineSimulator`` (the pipelined cores in one process, numpy) and ``LavaExecutor`` (the
pipelined ``PopulationCore`` processes on Lava's CPU backend). ``core_kernels`` holds the
arithmetic the last two share."""
