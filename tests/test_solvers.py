"""Samplers against diffusers' reference schedulers and against closed forms for Gaussian data."""
import math

import pytest
import torch

from sdm_neuro.diffusion.schedule import NoiseSchedule
from sdm_neuro.errors import SdmError
from sdm_neuro.samplers import DDIMSampler, DDPMSampler, make_sampler
from sdm_neuro.samplers.analytic_dpm import AnalyticDPMSampler, estimate_moments, load_moments, save_moments

diffusers = pytest.importorskip("diffusers")

SCHEDULE = NoiseSchedule.linear()
AB = SCHEDULE.alphas_cumprod  # float64
REF_CONFIG = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                  prediction_type="epsilon")
_g = torch.Generator().manual_seed(0)
C = torch.randn(2, 3, 4, 4, generator=_g, dtype=torch.float64)
X_T = torch.randn(2, 3, 4, 4, generator=_g, dtype=torch.float64)


def fake_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """Deterministic stand-in for a noise model; depends on x and t so multistep history matters."""
    return 0.3 * x + C.to(x.dtype) * math.cos(t / 150)


def run_both(ours, ref, steps=None):
    """Step our sampler (float64) and a diffusers scheduler (float32) side by side on their own
    trajectories from the same x_T; return the per-step pairs (ours, reference)."""
    x, y, out = X_T.clone(), X_T.float(), []
    for i, t in enumerate(ours.timesteps[:steps]):
        x = ours.step(fake_eps(x, t), i, x)
        y = ref.step(fake_eps(y, t), t, y).prev_sample
        out.append((x, y.double()))
    return out


def assert_close(x, y, rtol=1e-5):
    """Float32-level agreement relative to the sample's scale."""
    err, tol = (x - y).abs().max().item(), rtol * x.abs().max().item()
    assert err <= tol, f"max abs error {err:.2e} > {tol:.2e}"


@pytest.mark.parametrize("spacing,ref_spacing,n", [("uniform", "linspace", 1000), ("trailing", "trailing", 10),
                                                   ("trailing", "trailing", 50), ("leading", "leading", 10)])
def test_ddim_matches_diffusers(spacing, ref_spacing, n):
    # diffusers' DDIM steps to t - 1000 // n, so grids must have that constant stride (n divides 1000)
    ours = DDIMSampler(SCHEDULE, n, spacing, eta=0.0)
    ref = diffusers.DDIMScheduler(**REF_CONFIG, clip_sample=False, set_alpha_to_one=True,
                                  timestep_spacing=ref_spacing)
    ref.set_timesteps(n)
    assert ref.timesteps.tolist() == ours.timesteps
    for x, y in run_both(ours, ref):
        assert_close(x, y)


def _dpm_reference(algorithm, order, timesteps):
    ref = diffusers.DPMSolverMultistepScheduler(
        **REF_CONFIG, solver_order=order, algorithm_type=algorithm, solver_type="midpoint", lower_order_final=True,
        euler_at_final=False, use_karras_sigmas=False,
        final_sigmas_type="zero" if algorithm == "dpmsolver++" else "sigma_min")
    ref.set_timesteps(timesteps=timesteps)
    assert ref.timesteps.tolist() == timesteps
    return ref


GRIDS = [(10, "uniform"), (20, "uniform"), (10, "trailing"), (25, "quadratic")]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # diffusers deprecates algorithm_type="dpmsolver"
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("n,spacing", GRIDS)
def test_dpm_solver_matches_diffusers(order, n, spacing):
    ours = make_sampler("dpm-solver", SCHEDULE, n, spacing, order=order)
    ref = _dpm_reference("dpmsolver", order, ours.timesteps)
    # diffusers' noise-prediction solver cannot reach sigma = 0 (final_sigmas_type="zero" is refused):
    # compare all steps but the last, which we check as the first-order step to x_0.
    for x, y in run_both(ours, ref, steps=n - 1):
        assert_close(x, y)
    t = ours.timesteps[-1]
    eps = fake_eps(x, t)
    expected = (x - (1 - AB[t]).sqrt() * eps) / AB[t].sqrt()
    torch.testing.assert_close(ours.step(eps, n - 1, x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("n,spacing", GRIDS)
def test_dpm_solver_pp_matches_diffusers(order, n, spacing):
    ours = make_sampler("dpm-solver++", SCHEDULE, n, spacing, order=order)
    ref = _dpm_reference("dpmsolver++", order, ours.timesteps)
    for x, y in run_both(ours, ref):
        assert_close(x, y)


@pytest.mark.parametrize("name", ["dpm-solver", "dpm-solver++"])
def test_dpm_solver_order1_is_ddim_and_history_resets(name):
    ddim = DDIMSampler(SCHEDULE, 10, eta=0.0)
    solver = make_sampler(name, SCHEDULE, 10, order=1)
    x, y = X_T.clone(), X_T.clone()
    for i, t in enumerate(ddim.timesteps):
        x, y = ddim.step(fake_eps(x, t), i, x), solver.step(fake_eps(y, t), i, y)
        torch.testing.assert_close(y, x, rtol=1e-10, atol=1e-10)
    solver3 = make_sampler(name, SCHEDULE, 10, order=3)

    def model(x, t):
        return fake_eps(x, int(t[0]))

    first = solver3.sample(model, X_T.shape, x_T=X_T)
    assert torch.equal(solver3.sample(model, X_T.shape, x_T=X_T), first)


def test_ddpm_posterior_variance_full_grid():
    ddpm = DDPMSampler(SCHEDULE, 1000)
    assert ddpm.timesteps == list(range(999, -1, -1))
    beta_tilde = SCHEDULE.betas[1:] * (1 - AB[:-1]) / (1 - AB[1:])
    ours = torch.tensor([ddpm.posterior_variance(i) for i in range(1000)][::-1], dtype=torch.float64)
    torch.testing.assert_close(ours[1:], beta_tilde, rtol=1e-12, atol=0)
    assert ours[0] == 0.0


def test_ddim_eta0_is_deterministic():
    ddim = DDIMSampler(SCHEDULE, 20, eta=0.0)

    def model(x, t):
        return fake_eps(x, int(t[0]))

    a = ddim.sample(model, X_T.shape, generator=torch.Generator().manual_seed(1), x_T=X_T)
    b = ddim.sample(model, X_T.shape, generator=torch.Generator().manual_seed(2), x_T=X_T)
    assert torch.equal(a, b)


# Gaussian data x_0 ~ N(MU, S^2 I): exact noise predictor and Gamma_t in closed form.
MU, S = 0.3, 0.5
GAMMA = {t: float((1 - a) / (a * S**2 + 1 - a)) for t, a in enumerate(AB.tolist())}


def eps_star(x, t):
    a = AB[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def test_estimate_moments_gaussian_closed_form():
    data = MU + S * torch.randn(5000, 16, generator=torch.Generator().manual_seed(1))
    ts = [0, 10, 100, 500, 999]
    est = estimate_moments(eps_star, data, SCHEDULE, timesteps=ts, num_samples=4000, batch_size=1000,
                           generator=torch.Generator().manual_seed(2))
    assert sorted(est) == ts
    n = 4000 * 16
    for t in ts:  # mean of n squared Gaussians: relative standard error sqrt(2 / n)
        assert abs(est[t] - GAMMA[t]) < 5 * GAMMA[t] * math.sqrt(2 / n), (t, est[t], GAMMA[t])


def test_estimate_moments_iterable_data():
    batches = [(torch.zeros(3, 2, 2), torch.zeros(3)) for _ in range(2)]  # DataLoader-like, 6 samples per pass
    calls = []

    def ones(x, t):
        calls.append(x.shape[0])
        return torch.ones_like(x)

    assert estimate_moments(ones, batches, SCHEDULE, timesteps=[5, 7], num_samples=8, batch_size=2) == {5: 1.0, 7: 1.0}
    assert sum(calls) == 16


def test_analytic_variance_formula_and_bounds():
    gammas = {t: GAMMA[t] for t in range(1000)}
    smp = AnalyticDPMSampler(SCHEDULE, 10, "uniform", moments=gammas, clip_x0=False)
    for i, t in enumerate(smp.timesteps[:-1]):
        s = smp.prev_timestep(i)
        bb_t, bb_s, alpha = 1 - AB[t].item(), 1 - AB[s].item(), (AB[t] / AB[s]).item()
        lam2 = bb_s / bb_t * (1 - alpha)
        paper = lam2 + (math.sqrt(bb_t / alpha) - math.sqrt(bb_s - lam2)) ** 2 * (1 - GAMMA[t])
        assert smp.variances[i] == pytest.approx(paper, rel=1e-12)
    ddpm = DDPMSampler(SCHEDULE, 10, "uniform")
    low = AnalyticDPMSampler(SCHEDULE, 10, "uniform", moments={t: 1.5 for t in range(1000)}, clip_x0=False)
    high = AnalyticDPMSampler(SCHEDULE, 10, "uniform", moments={t: -0.5 for t in range(1000)}, clip_x0=False)
    for i, t in enumerate(smp.timesteps[:-1]):
        alpha = (AB[t] / AB[smp.prev_timestep(i)]).item()
        assert low.variances[i] == pytest.approx(ddpm.posterior_variance(i), rel=1e-12)  # clipped to Gamma = 1
        assert high.variances[i] == pytest.approx((1 - alpha) / alpha, rel=1e-12)  # clipped to Gamma = 0
        assert low.variances[i] < smp.variances[i] < high.variances[i]


def test_analytic_with_gamma_one_is_ddpm():
    moments = {t: 1.0 for t in range(1000)}
    analytic = AnalyticDPMSampler(SCHEDULE, 10, "trailing", moments=moments, clip_x0=True)
    ddpm = DDPMSampler(SCHEDULE, 10, "trailing", variance="small", clip_x0=True)

    def model(x, t):
        return fake_eps(x, int(t[0]))

    a = analytic.sample(model, X_T.shape, generator=torch.Generator().manual_seed(3), x_T=X_T)
    b = ddpm.sample(model, X_T.shape, generator=torch.Generator().manual_seed(3), x_T=X_T)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_analytic_dpm_recovers_gaussian_variance_with_few_steps():
    x_T = torch.randn(20000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def final_variance(sampler):
        x, g = x_T.clone(), torch.Generator().manual_seed(4)
        for i, t in enumerate(sampler.timesteps):
            x = sampler.step(eps_star(x, torch.full((x.shape[0],), t)), i, x, g)
        return x.var().item()

    analytic = final_variance(AnalyticDPMSampler(SCHEDULE, 10, "uniform", moments=GAMMA, clip_x0=False))
    small = final_variance(DDPMSampler(SCHEDULE, 10, "uniform", variance="small", clip_x0=False))
    large = final_variance(DDPMSampler(SCHEDULE, 10, "uniform", variance="large", clip_x0=False))
    # standard error of the sample variance: S^2 sqrt(2 / 20000) = 0.0025
    assert abs(analytic - S**2) < 0.0125
    assert abs(analytic - S**2) < min(abs(small - S**2), abs(large - S**2)) / 5


def test_moments_file_roundtrip_and_errors(tmp_path):
    path = tmp_path / "moments.json"
    save_moments(path, {999: 0.99, 0: 0.25})
    assert load_moments(path) == {0: 0.25, 999: 0.99}
    smp = make_sampler("analytic-dpm", SCHEDULE, 2, "uniform", moments=str(path))
    assert smp.timesteps == [999, 0] and smp.moments == {999: 0.99}
    with pytest.raises(SdmError, match="t=888"):
        make_sampler("analytic-dpm", SCHEDULE, 10, "uniform", moments=path)
    with pytest.raises(SdmError, match="needs the moments"):
        make_sampler("analytic-dpm", SCHEDULE, 10, "uniform")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SdmError, match="not an analytic-dpm moments file"):
        load_moments(tmp_path / "bad.json")
    with pytest.raises(SdmError, match="cannot read"):
        load_moments(tmp_path / "missing.json")
