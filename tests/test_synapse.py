"""Our torch synapse (``TorchConvSynapse``, used where lava-dl is missing) against SLAYER's
``synapse.Conv``: same initial weights for a seed, same state-dict keys and shapes, equal outputs
and gradients on the same weights, and checkpoints that load either way.

Both compute ``F.conv3d`` with the same arguments, so equal here means bit for bit (``torch.equal``)
on this machine; no tolerance is needed."""
import pytest
import torch

from sdm_neuro.models import synapse
from sdm_neuro.models.synapse import SynConv, TorchConvSynapse

from tests.helpers import tiny_model

CASES = [(3, 5, 3, 1, 1), (4, 4, 3, 2, 1), (6, 3, 1, 1, 0)]  # in, out, kernel, stride, padding (as the UNet uses)


@pytest.mark.parametrize("cin,cout,k,stride,pad", CASES)
def test_torch_synapse_layout_without_slayer(cin, cout, k, stride, pad):
    """Weight (out, in, k, k, 1), bias (out,) at 0, each time step convolved on its own."""
    conv = SynConv(cin, cout, k, stride=stride, padding=pad, impl="torch")
    assert isinstance(conv, TorchConvSynapse)
    assert dict((n, tuple(p.shape)) for n, p in conv.state_dict().items()) == {
        "weight": (cout, cin, k, k, 1), "bias": (cout,)}
    assert not conv.bias.any()
    x = torch.randn(2, cin, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    y = conv(x)
    with torch.no_grad():
        conv.bias.normal_()
        y = conv(x)
        for t in range(3):  # per step: the 2-D convolution of that step's slice
            y2 = torch.nn.functional.conv2d(x[..., t], conv.weight[..., 0], conv.bias, stride, pad)
            torch.testing.assert_close(y[..., t], y2, rtol=1e-5, atol=1e-6)


@pytest.mark.requires_slayer
@pytest.mark.parametrize("cin,cout,k,stride,pad", CASES)
def test_torch_synapse_equals_slayer(cin, cout, k, stride, pad):
    torch.manual_seed(7)
    ref = SynConv(cin, cout, k, stride=stride, padding=pad, impl="slayer")
    torch.manual_seed(7)
    ours = SynConv(cin, cout, k, stride=stride, padding=pad, impl="torch")
    assert type(ref).__module__.startswith("lava.lib.dl.slayer")
    sd_ref, sd_ours = ref.state_dict(), ours.state_dict()
    assert list(sd_ref) == list(sd_ours) == ["weight", "bias"]
    assert all(torch.equal(sd_ref[n], sd_ours[n]) for n in sd_ref)  # same init for the same seed
    assert (ref.stride, ref.padding, ref.dilation, ref.groups) == (ours.stride, ours.padding, ours.dilation,
                                                                   ours.groups)
    with torch.no_grad():
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    x = (torch.rand(3, cin, 8, 8, 4, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [m(xi) for m, xi in zip((ref, ours), xs)]
    assert torch.equal(outs[0], outs[1])
    g = torch.randn_like(outs[0])
    for o in outs:
        o.backward(g)
    assert torch.equal(xs[0].grad, xs[1].grad)
    assert torch.equal(ref.weight.grad, ours.weight.grad) and torch.equal(ref.bias.grad, ours.bias.grad)


@pytest.mark.requires_slayer
def test_unet_with_either_synapse_is_the_same_model(monkeypatch):
    """The whole spiking UNet built with SLAYER's synapse and with ours: the same initial weights
    for a seed, a checkpoint of either loads strictly in the other, equal loss and gradients."""
    model_s, card = tiny_model(seed=3)
    monkeypatch.setattr(synapse, "slayer_available", lambda: False)
    model_t, _ = tiny_model(seed=3)
    kinds = {type(m).__name__ for m in model_t.modules()}
    assert "TorchConvSynapse" in kinds and not any(type(m).__module__.startswith("lava") for m in model_t.modules())
    assert any(type(m).__module__.startswith("lava.lib.dl.slayer") for m in model_s.modules())
    sd_s, sd_t = model_s.state_dict(), model_t.state_dict()
    assert list(sd_s) == list(sd_t)
    assert all(torch.equal(sd_s[n], sd_t[n]) for n in sd_s)
    model_t.load_state_dict(sd_s, strict=True)
    model_s.load_state_dict(model_t.state_dict(), strict=True)

    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 1000, (4,), generator=g)
    losses = []
    for m in (model_s, model_t):
        m.train()
        torch.manual_seed(0)  # dropout
        out = m(x, t)
        loss = out.square().mean()
        loss.backward()
        losses.append(loss)
    assert losses[0].item() > 0 and torch.equal(losses[0], losses[1])
    grads = [{n: p.grad for n, p in m.named_parameters() if p.grad is not None} for m in (model_s, model_t)]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
