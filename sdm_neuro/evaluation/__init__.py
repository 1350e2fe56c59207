"""Sample generation and sample-quality evaluation (digits classifier, FID/KID on its features).

Submodules import torch at module level; the CLI commands import them lazily.
"""
