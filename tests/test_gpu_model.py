"""The GPU model (kernel tracing, launch / compute / memory per kernel, idle + dynamic power), the
45 nm baselines with memory, and the headline (SANA-FE rows, event model per batch, crossover)."""
from __future__ import annotations

import math

import pytest
import torch

from sdm_neuro.energy.baselines import (activation_bits, ann_estimate, baselines_section, int_mac,
                                        snn_estimate)
from sdm_neuro.energy.comparison import energy_vs_batch, events_at_batch, headline
from sdm_neuro.energy.event_model import DeployedEvents, event_energy
from sdm_neuro.energy.gpu_model import (GpuConstants, Kernel, cost_kernels, crossover, kernel_time,
                                        log_interp_crossing, measure_idle_w, model_error, trace_kernels)
from sdm_neuro.errors import SdmError
from sdm_neuro.hardware.profiles import load_profile, profile_from_dict

torch.set_num_threads(1)

# A hand-made GPU: 100 TFLOP/s peak at 50 %, 1 TB/s at 100 %, 5 us floor, 50 W idle, 50 W active floor, 400 W TDP,
# 10 pJ per byte, fp32.
C = GpuConstants("test", peak_flops=100e12, bandwidth=1e12, launch_floor_s=5e-6, compute_efficiency=0.5,
                 memory_efficiency=1.0, idle_w=50.0, active_floor_w=50.0, board_w=400.0, byte_j=10e-12,
                 element_bytes=4)


def test_kernel_trace_counts_kernels_not_views_and_flops_from_shapes():
    x = torch.empty(2, 3, 4, device="meta")
    w = torch.empty(5, 12, device="meta")
    kernels = trace_kernels(lambda: (x.view(2, 12).t().t() + 1) @ w.t())
    assert [k.op for k in kernels] == ["add", "mm"]  # view / t are free; empty happens outside
    add, mm = kernels
    assert add.flops == 24 and add.float_bytes == 2 * 24 * 4  # one elementwise op: read 24 floats, write 24
    assert mm.flops == 2 * 2 * 12 * 5  # 2 FLOPs per MAC
    assert mm.float_bytes == (24 + 60 + 10) * 4
    conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False).to("meta")
    (k,) = trace_kernels(lambda: conv(torch.empty(1, 1, 8, 8, device="meta")))
    assert k.op == "convolution" and k.flops == 2 * 4 * 9 * 64
    # ops on host tensors launch no device kernel
    assert trace_kernels(lambda: torch.ones(3) + 1) == []


def test_kernel_time_is_the_largest_term_not_the_sum():
    k = Kernel("x", flops=150e6 * 0.5 * 0.03, float_bytes=2e6 * 0.5 * 4 / 4, other_bytes=0)
    # compute 2.25e6 / 50e12 = 0.045 us, memory 1e6 / 1e12 = 1 us: both below the 5 us floor
    t, term = kernel_time(k, C)
    assert term == "launch" and t == pytest.approx(5e-6)
    big_flops = Kernel("mm", flops=1e12, float_bytes=4e6, other_bytes=0)  # 20 ms of compute at 50 TFLOP/s
    t, term = kernel_time(big_flops, C)
    assert term == "compute" and t == pytest.approx(1e12 / 50e12)
    big_bytes = Kernel("copy", flops=1e6, float_bytes=1e9, other_bytes=1e8)  # 1.1 GB at 1 TB/s
    t, term = kernel_time(big_bytes, C)
    assert term == "memory" and t == pytest.approx(1.1e9 / 1e12)
    bf16 = GpuConstants(**{**C.__dict__, "element_bytes": 2})
    assert kernel_time(big_bytes, bf16)[0] == pytest.approx((0.5e9 + 1e8) / 1e12)  # floats at 2 bytes


def test_energy_is_idle_plus_dynamic_power_capped_at_tdp():
    small = Kernel("add", flops=1e3, float_bytes=8e3, other_bytes=0)
    r = cost_kernels([small] * 10, C)
    t = 10 * 5e-6
    assert r["seconds"] == pytest.approx(t) and r["binding"] == "launch" and r["time_share"]["launch"] == 1.0
    flop_j = (400 - 50 - 50) / 100e12
    dyn = 10 * (50 * 5e-6 + flop_j * 1e3 + 10e-12 * 8e3)
    assert r["energy_j"] == pytest.approx(50 * t + dyn)  # idle power is charged
    assert r["idle_energy_j"] == pytest.approx(50 * t)
    # a kernel whose byte energy alone would exceed TDP is capped at (TDP - idle) x t
    hot = GpuConstants(**{**C.__dict__, "byte_j": 1e-9})
    big = Kernel("copy", flops=0, float_bytes=1e9, other_bytes=0)
    r = cost_kernels([big], hot)
    assert r["energy_j"] == pytest.approx(400 * 1e-3)
    assert r["mean_power_w"] == pytest.approx(400)


def test_gpu_model_on_a_tiny_model_is_launch_bound_at_batch_1():
    from sdm_neuro.card import card_from_dict
    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.energy.gpu_model import gpu_model_section
    from sdm_neuro.models import build_model
    from sdm_neuro.samplers import make_sampler

    card = card_from_dict({"model": {"base_channels": 4, "channel_mult": [1, 2], "temb_dim": 16, "T": 2}})
    sampler = make_sampler("ddim", NoiseSchedule.from_card(card), 3)
    sec = gpu_model_section({"snn": (lambda: build_model(card), (1, 8, 8), None)}, sampler, 3, 4,
                            load_profile("h100-bf16"), batches=(1, 4, 64, 256))
    rows = sec["networks"]["snn"]["batches"]
    assert set(rows) == {"1", "4", "64", "256"}
    assert rows["1"]["binding"] == "launch" and rows["1"]["time_share"]["launch"] > 0.99
    assert len({r["kernels_per_evaluation"] for r in rows.values()}) == 1  # the batch does not add kernels
    assert rows["256"]["flops_per_evaluation"] == pytest.approx(256 * rows["1"]["flops_per_evaluation"], rel=1e-3)
    assert rows["256"]["latency_per_image_s"] < rows["1"]["latency_per_image_s"]
    n = rows["1"]["kernels_per_evaluation"] * 3 + rows["1"]["solver_kernels_per_job"]
    assert rows["1"]["job_seconds"] == pytest.approx(n * 5e-6)  # every kernel at the 5 us floor
    assert rows["1"]["energy_per_image_mj"] == pytest.approx(n * 5e-6 * (60 + 40) * 1e3, rel=1e-3)
    sens = sec["networks"]["snn"]["energy_per_image_mj_by_launch_floor_factor"]
    assert sens["0.5"]["1"] == pytest.approx(rows["1"]["energy_per_image_mj"] / 2, rel=1e-3)  # launch-bound
    assert sens["0.5"]["256"] < rows["256"]["energy_per_image_mj"] < sens["2"]["256"]


def test_measurement_helpers_idle_power_and_model_error():
    class Meter:
        available, j, t = True, 0.0, 0.0

        def read_j(self):
            return self.j

    m = Meter()

    def sleep(s):
        m.j += 70.0 * s
        m.t += s

    assert measure_idle_w(m, 2.0, sleep, lambda: m.t) == pytest.approx(70.0)
    m.available = False
    assert measure_idle_w(m, 2.0, sleep, lambda: m.t) is None
    model = {"networks": {"ann": {"batches": {"4": {"latency_per_image_s": 2e-3, "energy_per_image_mj": 150.0}}}}}
    meas = {"networks": {"ann": {"4": {"latency_per_image_s": 1e-3, "energy_per_image_mj": 100.0}}}}
    assert model_error(model, meas) == {"ann": {"4": {"latency": pytest.approx(1.0), "energy": pytest.approx(0.5)}}}


# -- baselines -----------------------------------------------------------------------------------

def test_activation_bits_rule_and_int_profiles():
    assert [activation_bits(T) for T in (1, 2, 3, 4, 5, 7, 8, 15, 16)] == [1, 2, 2, 3, 3, 3, 4, 4, 5]
    with pytest.raises(SdmError):
        activation_bits(0)
    assert int_mac(3) == (0.105, "cmos45nm-int3") and int_mac(8) == (0.23, "cmos45nm-int8")
    pj, how = int_mac(4)
    assert pj == pytest.approx(0.2 * 4 / 8 + 0.03) and "estimate" in how


def _events(**kw) -> DeployedEvents:
    base = dict(first_conv_macs=10, host_macs=20, sops=1000, sops_with_zero_weights=1100, sops_outside_window=0,
                sops_paper_graph=1500, sops_paper_model=None, spikes=50, spikes_outside_window=0,
                neuron_updates_active=400, neuron_updates_inactive=300, lava_steps=7)
    return DeployedEvents(**{**base, **kw})


def test_memory_model_against_a_hand_count():
    bit = 10.0 / 64  # Horowitz: 10 pJ per 64-bit read of an 8 KB SRAM
    assert load_profile("cmos45nm").sram_access_pj_per_bit == bit
    a = ann_estimate(100, 10, 0.23, 8, 8, bit, "int8")
    # 100 MACs x (8 + 8 bits read) + 10 outputs x 8 bits written
    assert a.total_pj == pytest.approx(23 + bit * (100 * 16 + 10 * 8))
    assert a.components_pj["activation_writes"] == pytest.approx(bit * 80)
    assert ann_estimate(100, 10, 0.23, 8, 8, None, "int8").total_pj == pytest.approx(23)
    s = snn_estimate(_events(), 4.6, 0.9, bit, "fp32")
    # 20 host MACs (fp32, 64 bits of operands each), 1000 SOPs (8-bit weight each), 400 active updates
    # (24-bit membrane read + write); inactive updates are not charged
    hand = 4.6 * 20 + 0.9 * 1000 + bit * (20 * 64 + 1000 * 8 + 400 * 48)
    assert s.total_pj == pytest.approx(hand)
    assert snn_estimate(_events(), 4.6, 0.9, None, "fp32").total_pj == pytest.approx(4.6 * 20 + 0.9 * 1000)


def test_baselines_section_uses_the_t_bit_profile():
    class Layer:
        def __init__(self, macs, out):
            self.macs, self.out_shape, self.calls = macs, out, 1

    class Report:
        total_macs = 300
        layers = [Layer(100, [1, 2, 3, 3]), Layer(200, [1, 4])]

    sec = baselines_section(Report(), _events(), T=4, evals_per_image=10)
    assert sec["activation_bits"] == 3 and sec["int_profile"] == "cmos45nm-int3"
    assert sec["ann_output_activations"] == 18 + 4
    pe = sec["per_evaluation"]
    bit = 10.0 / 64
    assert pe["ann_tbit_memory"]["total_mj"] * 1e9 == pytest.approx(0.105 * 300 + bit * (300 * 11 + 22 * 3))
    assert pe["ann_fp32"]["total_mj"] * 1e9 == pytest.approx(4.6 * 300)
    assert sec["per_image_mj"]["snn_int8"] == pytest.approx(10 * (4.6 * 20 + 0.03 * 1000) / 1e9)
    assert all(v["not_modelled"] for v in pe.values())


# -- the headline --------------------------------------------------------------------------------

def test_event_energy_per_batch_follows_the_pipeline_schedule():
    ev = _events(neuron_updates_active=40, neuron_updates_inactive=30)  # 10 neurons, T = 4
    assert events_at_batch(ev, 4, 9, 4).neuron_updates_inactive == pytest.approx(10 * 4 * 3 / 4)  # 3 drain slots
    assert events_at_batch(ev, 4, 9, 1).neuron_updates_inactive == pytest.approx(120)
    assert events_at_batch(ev, 4, 8, 4).neuron_updates_inactive == pytest.approx(20)
    assert events_at_batch(ev, 4, 9, 4).sops == ev.sops


def test_crossover():
    gpu, neuro = {1: 10.0, 2: 5.0, 4: 1.0}, {1: 2.0, 2: 2.0, 4: 2.0}
    assert crossover(gpu, neuro) == 4
    assert crossover({1: 3.0, 2: 2.5}, {1: 2.0, 2: 2.0}) is None
    assert crossover({1: 2.0}, {1: 2.0}) == 1  # at or below
    x = log_interp_crossing(gpu, neuro)
    assert 2 < x < 4
    assert math.isclose(x, math.exp(math.log(2) + 3 / 4 * math.log(2)))


def _gpu_model(vals: dict) -> dict:
    return {"profile": "h100-bf16", "networks": {
        "ann": {"batches": {str(b): {"energy_per_image_mj": v, "latency_per_image_s": 1e-3 / b, "binding": "launch",
                                     "time_share": {"launch": 1.0}, "kernels_per_evaluation": 9, "mean_power_w": 100}
                            for b, v in vals.items()},
                "lower_bound": {"energy_per_image_mj": 0.1, "latency_per_image_s": 1e-7, "basis": "lower bound"}}}}


def test_headline_rows_with_and_without_sanafe():
    profs = [load_profile("loihi2")]
    ev = _events(neuron_updates_active=40, neuron_updates_inactive=40, lava_steps=8)  # batch 2, 2 drain slots
    neuro_mj = event_energy(profs[0], ev).total_pj * 10 / 1e9
    gm = _gpu_model({1: 1000.0, 2: neuro_mj * 2, 4: neuro_mj / 2})
    sanafe = {"label": "SANA-FE, Loihi 1 architecture", "available": True, "reason": None,
              "energy_per_image_mj": 4.2, "energy_per_image_by_unit_mj": {"synapse": 3, "dendrite": 0, "soma": 1,
                                                                          "network": 0.2},
              "latency_per_image_s": 0.13, "latency_basis": "SANA-FE time", "evaluations_simulated": 2}
    lm = {"label": "our latency model", "latency_per_image_s": 0.12, "latency_per_evaluation_s": 0.012,
          "validation": {"max_abs_window_relative_error": 0.08}, "basis": "slowest core + sync"}
    h = headline(ev, 10, 2, {"snn": None, "ann": 1000}, None, profs, gpu_model=gm, sanafe=sanafe, latency_model=lm,
                 T=4, latency_steps=5)
    rows = h["rows"]
    assert rows[0]["run"] == "Loihi (SANA-FE, Loihi 1 architecture)"
    assert rows[0]["energy_per_image_mj"] == 4.2 and rows[0]["latency_per_image_s"] == 0.13
    assert rows[0]["energy_by_unit_mj"]["synapse"] == 3
    assert rows[1]["latency_per_image_s"] == 0.12 and "within 8.00% of SANA-FE" in rows[1]["latency_basis"]
    assert rows[1]["energy_per_image_mj"] == pytest.approx(neuro_mj)
    gpu = rows[2]
    assert gpu["run"] == "GPU (h100-bf16, modelled)" and gpu["energy_per_image_mj"] == neuro_mj * 2  # batch 2
    assert gpu["lower_bound_energy_mj"] == 0.1
    # neither SANA-FE dict nor latency model: "not run" and Lava steps
    for sf, why in ((None, "did not run"), ({"available": False, "reason": "pip install 'sdm-neuro[sanafe]'"},
                                            "pip install")):
        h = headline(ev, 10, 2, {"snn": None, "ann": 1000}, None, profs, gpu_model=gm, sanafe=sf, T=4,
                     latency_steps=5)
        r0, r1 = h["rows"][:2]
        assert r0["energy_per_image_mj"] is None and r0["energy_basis"].startswith("not run: ") and why in \
            r0["energy_basis"]
        assert r1["latency_per_image_s"] is None and "Lava steps" in r1["latency_basis"]
    evb = h["energy_vs_batch"]
    assert evb["batches"] == [1, 2, 4]
    assert evb["neuromorphic"][1] == pytest.approx(neuro_mj)  # the job's batch (2) gives the headline's figure
    assert evb["neuromorphic"][0] > evb["neuromorphic"][1] > evb["neuromorphic"][2]  # idle slots amortised
    assert evb["crossover"]["ann"]["batch"] == 4
    assert energy_vs_batch(None, 4, 5, 10, gm, profs[0])["neuromorphic"] is None


# -- profile validation of the GPU model's fields ---------------------------------------------------

def _gpu_profile(**gpu) -> dict:
    fields = {"peak_tflops": 989, "board_power_w": 700, "precision": "bf16", "memory_bandwidth_tbs": 3.35,
              "launch_floor_us": 5.0, "compute_efficiency": 0.5, "memory_efficiency": 0.8, "idle_power_w": 60.0,
              "active_floor_w": 40.0, "memory_pj_per_byte": 31.2}
    fields.update(gpu)
    fields = {k: v for k, v in fields.items() if v is not None}
    return {"estimates": [], "profile": {"name": "g", "kind": "gpu", "description": "d"},
            "energy": {"mac_pj": 1.4, "ac_pj": 0.7}, "gpu": fields,
            "sources": {"mac_pj": "a", "ac_pj": "b", **{k: "s" for k in fields if k != "precision"}}}


def test_gpu_model_fields_are_validated():
    p = profile_from_dict(_gpu_profile())
    assert GpuConstants.from_profile(p).launch_floor_s == pytest.approx(5e-6)
    for shipped in ("h100-bf16", "h100-fp32", "h200-bf16"):
        c = GpuConstants.from_profile(load_profile(shipped))
        assert c.board_w == 700 and c.idle_w < c.board_w
    assert load_profile("h100-bf16").gpu["memory_bandwidth_tbs"] == 3.35
    cases = [(_gpu_profile(launch_floor_us=-1), r"gpu\.launch_floor_us must be >= 0"),
             (_gpu_profile(compute_efficiency=1.5), r"gpu\.compute_efficiency must be in \(0, 1\]"),
             (_gpu_profile(memory_efficiency=0), r"gpu\.memory_efficiency must be in \(0, 1\]"),
             (_gpu_profile(idle_power_w=None), r"missing field gpu\.idle_power_w"),
             (_gpu_profile(idle_power_w=690), r"must not exceed gpu\.board_power_w"),
             (_gpu_profile(launch_floor_s=5e-6), r"unknown field gpu\.launch_floor_s")]
    for data, msg in cases:
        with pytest.raises(SdmError, match=msg):
            profile_from_dict(data)
    nosrc = _gpu_profile()
    del nosrc["sources"]["launch_floor_us"]
    with pytest.raises(SdmError, match=r"missing field sources\.launch_floor_us"):
        profile_from_dict(nosrc)
    with pytest.raises(SdmError, match="no GPU model constants"):
        GpuConstants.from_profile(load_profile("a100-fp32"))


def test_measured_batches_subtracts_the_idle_power_on_any_device():
    """The measurement path (NVML on CUDA) on the CPU with a meter that reads 100 W all the time:
    the whole energy is 100 W x the job time, and nothing is left above idle."""
    import time

    from sdm_neuro.card import card_from_dict
    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.energy.gpu_model import measured_batches
    from sdm_neuro.models import build_model
    from sdm_neuro.samplers import make_sampler

    class WattMeter:
        available, reason = True, None

        def read_j(self):
            return 100.0 * time.perf_counter()

    card = card_from_dict({"model": {"kind": "ann", "base_channels": 4, "channel_mult": [1, 2], "temb_dim": 16,
                                     "T": 1}})
    sampler = make_sampler("ddim", NoiseSchedule.from_card(card), 2)
    m = measured_batches({"ann": (build_model(card), (1, 8, 8))}, sampler, 2, torch.device("cpu"), "bf16",
                         batches=(1, 2), warmup=0, repeats=1, meter=WattMeter(), idle_seconds=0.05)
    assert m["idle_power_w"] == pytest.approx(100.0, rel=1e-3) and m["precision"] == "fp32"
    for b, row in m["networks"]["ann"].items():
        assert row["latency_per_image_s"] == pytest.approx(row["job_seconds"] / int(b))
        assert row["energy_per_image_mj"] == pytest.approx(100.0 * row["job_seconds"] * 1e3 / int(b), rel=0.05)
        assert abs(row["energy_above_idle_per_image_mj"]) < 0.05 * row["energy_per_image_mj"]
