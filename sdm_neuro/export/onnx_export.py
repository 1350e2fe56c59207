"""``export --target onnx``: a model (ANN twin or spiking UNet) as one ONNX graph for onnxruntime.

The graph takes ``x`` (N, C, H, W) float32 and ``t`` (N,) int64 (diffusion timesteps) and returns
``eps`` (N, C, H, W) float32; the batch axis is dynamic. A spiking model is unrolled over its T
spiking steps (its ``forward`` already loops over T, so tracing unrolls it): the IF neurons
become ``Greater``/``Where`` nodes, the SLAYER synapses (``Conv3d`` with kernel (k, k, 1)) plain
``Conv`` nodes. During export the spike function ``ATanSpike.apply`` is replaced by its eval
forward ``(x > 0)`` (a plain tensor op), so no autograd Function has to be traced.

TorchScript exporter (``torch.onnx.export``; ``dynamo=False`` where torch has the dynamo one,
the default from torch 2.9, which needs onnxscript), opset 17. The file is written
atomically and checked against PyTorch with onnxruntime on a random batch of a different size
than the one traced (which also exercises the dynamic batch axis).
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import SdmError

OPSET = 17


def _torchscript_exporter() -> dict:
    """``torch.onnx.export`` keywords that select the TorchScript exporter on every torch: torch
    2.3 has only that one (no ``dynamo`` keyword); newer torch defaults to the dynamo exporter."""
    import inspect

    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


@contextlib.contextmanager
def plain_spike_forward():
    """Temporarily replace ``ATanSpike.apply`` with its eval forward ``(x > 0).to(x.dtype)``."""
    from ..neurons import if_neuron

    cls = if_neuron.ATanSpike
    had_own = "apply" in cls.__dict__
    old = cls.__dict__.get("apply")

    def _heaviside(x: torch.Tensor, alpha: float) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    cls.apply = staticmethod(_heaviside)
    try:
        yield
    finally:
        if had_own:
            cls.apply = old
        else:
            del cls.apply


class EpsWrapper(nn.Module):
    """``(x float32 (N, C, H, W), t int64 (N,)) -> eps``: the exported signature."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t)


def onnx_session(path_or_bytes, device: str | torch.device = "cpu"):
    """An onnxruntime session; the CUDA provider when ``device`` is CUDA and onnxruntime has it."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, sess_options=opts, providers=providers)


def export_module_onnx(model: nn.Module, card, out: str | Path, verify_batch: int = 3, seed: int = 0) -> dict:
    """Export a built ``DiffusionUNet`` (any weights) to ``out``; returns the summary dict."""
    m = card.model
    shape = (m.in_channels, m.image_size, m.image_size)
    num_steps = card.diffusion.num_steps
    model = model.cpu().eval()
    wrapper = EpsWrapper(model).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *shape, generator=gen)
    t = torch.randint(0, num_steps, (2,), generator=gen, dtype=torch.int64)
    out = Path(out)
    try:
        with atomic_path(out, suffix=".onnx") as tmp, plain_spike_forward(), torch.no_grad(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant-folding and tracer notices
            torch.onnx.export(
                wrapper, (x, t), str(tmp), opset_version=OPSET, input_names=["x", "t"], output_names=["eps"],
                dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "eps": {0: "batch"}}, do_constant_folding=True,
                **_torchscript_exporter())
            info = _verify(tmp, wrapper, shape, num_steps, verify_batch, seed)
    except SdmError:
        raise
    except Exception as exc:  # tracing/export problems: one line for the CLI
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdmError(f"ONNX export of {m.name} failed: {type(exc).__name__}: {first}") from None
    return {
        "onnx": str(out), "model": m.name, "kind": m.kind, "T": card.T,
        "unrolled_over_T": m.kind == "snn", "opset": OPSET,
        "inputs": {"x": ["batch", *shape], "t": ["batch"]}, "outputs": {"eps": ["batch", *shape]},
        "dtypes": {"x": "float32", "t": "int64", "eps": "float32"},
        **info, "bytes": out.stat().st_size,
    }


def _verify(path: Path, wrapper: nn.Module, shape, num_steps: int, batch: int, seed: int) -> dict:
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = sorted({n.op_type for n in proto.graph.node})
    sess = onnx_session(Path(path))
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, *shape, generator=gen)
    t = torch.randint(0, num_steps, (batch,), generator=gen, dtype=torch.int64)
    with torch.no_grad():
        ref = wrapper(x, t).numpy()
    got = sess.run(["eps"], {"x": x.numpy(), "t": t.numpy()})[0]
    if got.shape != ref.shape:
        raise SdmError(f"onnxruntime returned shape {got.shape}, PyTorch {ref.shape}")
    return {"nodes": len(proto.graph.node), "op_types": ops, "verify_batch": batch,
            "onnxruntime_providers": sess.get_providers(),
            "onnxruntime_max_abs_error": float(np.abs(got - ref).max()),
            "reference_max_abs": float(np.abs(ref).max())}


def export_onnx(model_ref: str | Path, out: str | Path | None = None) -> dict:
    """Export MODEL (checkpoint or card naming one) to ONNX (default ``export/NAME.onnx``)."""
    from ..checkpoint import load_model

    model, card, _ = load_model(model_ref)
    out = Path(out) if out else Path("export") / f"{card.model.name}.onnx"
    return {"source": str(model_ref), **export_module_onnx(model, card, out)}
