"""Hardware energy profiles, the paper's energy formulas (Eqs. 19-20), the MAC counter and
``sdm-neuro info`` on the paper's CIFAR-10 configuration."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sdm_neuro.card import load_card
from sdm_neuro.energy.formulas import ann_energy_pj, paper_sops, snn_energy_pj
from sdm_neuro.counting.macs import count_macs
from sdm_neuro.hardware.profiles import list_profiles, load_profile, profile_from_dict
from sdm_neuro.errors import SdmError

REPO = Path(__file__).resolve().parents[1]
PAPER_ANN_CARD = REPO / "models" / "sdm-cifar10-paper-ann.toml"
PAPER_SNN_CARD = REPO / "models" / "sdm-cifar10-paper.toml"

torch.set_num_threads(1)


# -- profiles ----------------------------------------------------------------------------------
SHIPPED = ["a100-bf16", "a100-fp32", "cmos45nm", "h100-bf16", "h100-fp32", "h200-bf16", "loihi", "loihi2"]


def test_shipped_profiles_load_and_cite_every_number():
    assert set(SHIPPED) <= set(list_profiles())
    for name in SHIPPED:
        p = load_profile(name)
        assert p.name == name and p.kind in ("cmos", "neuromorphic", "gpu")
        numbers = ["mac_pj", "ac_pj"] + [k for k in ("neuron_update_pj", "neuron_update_inactive_pj", "spike_pj",
                                                     "static_power_mw", "sram_access_pj_per_bit")
                                      if getattr(p, k) is not None]
        numbers += list(p.capacity) + [k for k in p.gpu if k != "precision"]
        for key in numbers:
            assert p.sources.get(key), f"{name}: {key} has no source"
        assert set(p.estimates) <= set(numbers)


def test_cmos45nm_is_the_papers_eq20_model():
    p = load_profile("cmos45nm")
    assert (p.mac_pj, p.ac_pj) == (4.6, 0.9)
    assert p.estimates == ("sram_access_pj_per_bit",)  # MAC and AC are published figures
    assert "Horowitz" in p.sources["mac_pj"]


def test_gpu_profiles_are_board_power_over_peak():
    for name in ("a100-fp32", "a100-bf16", "h100-fp32", "h100-bf16", "h200-bf16"):
        p = load_profile(name)
        flop_pj = p.gpu["board_power_w"] / (p.gpu["peak_tflops"] * 1e12) * 1e12
        assert p.ac_pj == pytest.approx(flop_pj, rel=1e-4)
        assert p.mac_pj == pytest.approx(2 * flop_pj, rel=1e-4)
        assert "best case" in p.description
    assert load_profile("a100-fp32").mac_pj == pytest.approx(2 * 400 / 19.5, rel=1e-4)
    assert load_profile("h100-bf16").mac_pj == pytest.approx(2 * 700 / 989, rel=1e-4)


# Davies et al., IEEE Micro 38(1), 2018, Table 2 (pre-silicon simulation results, pJ).
DAVIES_2018_TABLE_2 = {"ac_pj": 23.6, "neuron_update_pj": 81.0, "neuron_update_inactive_pj": 52.0, "spike_pj": 1.7}


def test_loihi_profiles_match_their_cited_table():
    l1, l2 = load_profile("loihi"), load_profile("loihi2")
    for p in (l1, l2):
        for key, value in DAVIES_2018_TABLE_2.items():
            assert getattr(p, key) == value, (p.name, key)
            assert "Davies" in p.sources[key] and "Table 2" in p.sources[key]
            assert "pre-silicon simulation" in p.sources[key], (p.name, key)
            assert f"{value:g} pJ" in p.sources[key], (p.name, key)
        assert "pre-silicon simulation" in p.description and "measured" not in p.description
    assert "active 81 pJ" in l1.sources["neuron_update_pj"]
    assert "inactive 52 pJ" in l1.sources["neuron_update_inactive_pj"]
    assert l2.capacity["cores_per_chip"] == 128 and l2.capacity["neurons_per_core"] == 8192
    assert set(DAVIES_2018_TABLE_2) <= set(l2.estimates)  # Loihi 1 figures reused for Loihi 2
    assert not set(DAVIES_2018_TABLE_2) & set(l1.estimates)  # published figures for Loihi 1


def test_load_profile_by_path(tmp_path):
    src = (REPO / "hw_profiles" / "cmos45nm.toml").read_text().replace('name = "cmos45nm"', 'name = "mine"')
    f = tmp_path / "mine.toml"
    f.write_text(src)
    assert load_profile(f).name == "mine"
    assert load_profile(str(f)).mac_pj == 4.6


GOOD = """
estimates = []
[profile]
name = "my"
kind = "cmos"
description = "test"
[energy]
mac_pj = 4.6
ac_pj = AC
[sources]
mac_pj = "paper A"
ac_pj = "paper B"
"""


def _write(tmp_path, text, name="my.toml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_validation_errors_name_the_field_and_file(tmp_path):
    assert load_profile(_write(tmp_path, GOOD.replace("AC", "0.9"))).ac_pj == 0.9
    with pytest.raises(SdmError, match=r"hw profile my\.toml: energy\.ac_pj must be >= 0, got -1"):
        load_profile(_write(tmp_path, GOOD.replace("AC", "-1")))
    with pytest.raises(SdmError, match=r"my\.toml: energy\.ac_pj must be a number"):
        load_profile(_write(tmp_path, GOOD.replace("AC", '"cheap"')))
    with pytest.raises(SdmError, match=r"my\.toml: missing field energy\.ac_pj"):
        load_profile(_write(tmp_path, GOOD.replace("ac_pj = AC\n", "")))
    with pytest.raises(SdmError, match=r"my\.toml: missing field sources\.ac_pj"):
        load_profile(_write(tmp_path, GOOD.replace("AC", "0.9").replace('ac_pj = "paper B"\n', "")))
    with pytest.raises(SdmError, match=r"my\.toml: missing field profile\.kind"):
        load_profile(_write(tmp_path, GOOD.replace("AC", "0.9").replace('kind = "cmos"\n', "")))
    with pytest.raises(SdmError, match=r"my\.toml: profile\.kind must be one of"):
        load_profile(_write(tmp_path, GOOD.replace("AC", "0.9").replace('"cmos"', '"fpga"')))
    with pytest.raises(SdmError, match=r"my\.toml: estimates names 'spike_pj'"):
        load_profile(_write(tmp_path, GOOD.replace("AC", "0.9").replace("estimates = []", 'estimates = ["spike_pj"]')))
    with pytest.raises(SdmError, match=r"my\.toml: missing field energy\.neuron_update_pj"):
        load_profile(_write(tmp_path, GOOD.replace("AC", "0.9").replace('"cmos"', '"neuromorphic"')))
    with pytest.raises(SdmError, match=r"unknown hw profile 'nope'"):
        load_profile("nope")


# -- formulas ----------------------------------------------------------------------------------
def test_paper_eq19_eq20():
    cmos = load_profile("cmos45nm")
    assert paper_sops(0.25, 4, 1000) == 1000.0
    # Eq. 20: E = E_MAC x FLOPs(first conv) + E_AC x SOPs
    assert snn_energy_pj(1000, 2000, cmos) == pytest.approx(4.6 * 1000 + 0.9 * 2000)
    assert ann_energy_pj(1e6, cmos) == pytest.approx(4.6e6)
    with pytest.raises(SdmError):
        snn_energy_pj(-1, 0, cmos)


def _events(**kw):
    from sdm_neuro.energy.event_model import DeployedEvents

    base = dict(first_conv_macs=100, host_macs=300, sops=7.5, sops_with_zero_weights=9, sops_outside_window=0,
                sops_paper_graph=10, sops_paper_model=8, spikes=3, spikes_outside_window=0,
                neuron_updates_active=96, neuron_updates_inactive=48, lava_steps=6)
    return DeployedEvents(**{**base, **kw})


def test_event_energy_charges_every_event_kind():
    from sdm_neuro.energy.event_model import event_energy

    loihi = load_profile("loihi")
    e = event_energy(loihi, _events())
    assert e.total_pj == pytest.approx(4.6 * 300 + 23.6 * 7.5 + 81 * 96 + 52 * 48 + 1.7 * 3)
    assert any("static power" in x for x in e.not_modelled)
    out = event_energy(loihi, _events(sops_outside_window=2, spikes_outside_window=1))
    assert out.total_pj - e.total_pj == pytest.approx(23.6 * 2 + 1.7 * 1)  # outside-window events are charged
    assert event_energy(load_profile("h100-bf16"), _events()) is None  # no neuron / spike figures
    data = {"estimates": [], "profile": {"name": "s", "kind": "neuromorphic", "description": "d"},
            "energy": {"mac_pj": 1, "ac_pj": 1, "neuron_update_pj": 2, "spike_pj": 1, "static_power_mw": 2},
            "sources": {k: "x" for k in ("mac_pj", "ac_pj", "neuron_update_pj", "spike_pj", "static_power_mw")}}
    p = profile_from_dict(data)
    e = event_energy(p, _events(), seconds=0.5)
    assert e.components_pj["static"] == pytest.approx(2e-3 * 0.5 * 1e12)  # 1 mJ = 1e9 pJ
    assert e.components_pj["neuron_updates_inactive"] == 2 * 48  # no inactive figure: the active one
    assert any("inactive" in x for x in e.not_modelled)


# -- MAC counter -------------------------------------------------------------------------------
class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 9x9 -> 5x5
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x, t):
        return self.fc(self.head(x).flatten(1))


def test_count_macs_hand_computed():
    net = TinyNet().train()
    r = count_macs(net, image_size=9, in_channels=3)
    layers = {layer.name: layer for layer in r.layers}
    assert layers["head"].macs == 8 * 5 * 5 * 3 * 3 * 3  # out elements x in_ch x k x k = 5400
    assert layers["fc"].macs == 10 * 200  # out features x in features
    assert (layers["head"].part, layers["head"].role) == ("host", "encoder")
    assert layers["fc"].part == "body"
    assert r.total_macs == 7400 and r.first_conv_macs == 5400 and r.kind == "ann"
    assert net.training  # train/eval flags restored


def test_count_macs_slayer_synapse_per_step():
    from sdm_neuro.models.unet import SynConv
    from sdm_neuro.neurons import IFNeuron

    class TinySNN(nn.Module):
        T = 3

        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(1, 4, 3, padding=1)
            self.neuron = IFNeuron(3)
            self.conv = SynConv(4, 2, 3, stride=2, padding=1)  # 6x6 -> 3x3 per step

        def forward(self, x, t):
            h = self.head(x)
            return self.conv(self.neuron(h.unsqueeze(-1).expand(*h.shape, 3)))

    r = count_macs(TinySNN(), image_size=6, in_channels=1)
    conv = next(layer for layer in r.layers if layer.name == "conv")
    assert conv.steps == 3 and conv.flops_per_step == 2 * 3 * 3 * 4 * 9 and conv.macs == 3 * conv.flops_per_step
    assert conv.spike_input and conv.part == "body"
    assert r.kind == "snn" and r.neurons == 4 * 6 * 6 and r.neuron_updates == 3 * 4 * 6 * 6
    assert r.spike_flops_per_step == conv.flops_per_step


def test_paper_anchor_ann_macs_times_emac():
    """Table IV: DDPM-ANN 29.23 mJ per evaluation = 6.35 GMAC x 4.6 pJ (pytorch-ddpm UNet with a
    middle attention block). Our ANN twin has no attention: expect a little lower, within 5 %."""
    from sdm_neuro.models import build_model

    card = load_card(PAPER_ANN_CARD)
    r = count_macs(build_model(card), card.model.image_size, card.model.in_channels)
    mj = ann_energy_pj(r.total_macs, load_profile("cmos45nm")) / 1e9
    print(f"paper ANN twin: {r.total_macs / 1e9:.4f} GMAC x 4.6 pJ = {mj:.2f} mJ (paper: 29.23 mJ)")
    assert mj == pytest.approx(29.23, rel=0.05)
    assert r.first_conv_macs == 128 * 32 * 32 * 3 * 9
    assert r.host_macs + r.body_macs == r.total_macs


# -- sdm-neuro info ----------------------------------------------------------------------------
def test_info_paper_card_json():
    from click.testing import CliRunner

    from sdm_neuro.cli import cli

    res = CliRunner().invoke(cli, ["info", str(PAPER_SNN_CARD), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    params = info["parameters"]
    print(f"paper SNN: {params['total']:,} params = {params['total_M_2^20']} M (2^20); "
          f"paper 63.61, difference {info['paper']['difference_M_2^20']:+}")
    assert params["total"] == params["host"] + params["body"] > 60_000_000
    assert abs(info["paper"]["difference_M_2^20"]) < 1.0  # 63.61 M (2^20) in the paper
    assert info["tsm"]["params"] == 0 and info["tsm"]["params_if_enabled"] == 51 * 4
    assert info["macs"]["body"] > info["macs"]["host"] > 0
    assert info["architecture"]["T"] == 4


# -- timed runs --------------------------------------------------------------------------------
def test_time_repeats_warms_up_then_reports_median_and_spread():
    from sdm_neuro.energy.timing import time_repeats

    calls, ticks = [], iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # one (start, stop) per timed repeat

    class Meter:
        j = 0.0

        def read_j(self):
            Meter.j += 5.0
            return Meter.j

    rep = time_repeats(lambda: calls.append(len(calls)), warmup=2, repeats=3, meter=Meter(),
                       clock=lambda: next(ticks))
    assert len(calls) == 5  # 2 untimed warm-up runs, then 3 timed ones
    d = rep.to_dict()
    assert d["seconds_all"] == [1.0, 3.0, 2.0] and d["seconds"] == 2.0  # median, not mean or last
    assert (d["seconds_min"], d["seconds_max"], d["spread"]) == (1.0, 3.0, 1.0)
    assert d["measured_energy_j_all"] == [5.0, 5.0, 5.0] and d["warmup_runs"] == 2
    with pytest.raises(SdmError, match="repeats must be >= 1"):
        time_repeats(lambda: None, repeats=0)
    with pytest.raises(SdmError, match="warm-up"):
        time_repeats(lambda: None, warmup=-1)


def test_rapl_meter_sums_packages_and_corrects_wraparound(tmp_path):
    from sdm_neuro.energy.timing import RaplMeter

    assert RaplMeter(tmp_path / "none").read_j() is None
    for i, (e, wrap) in enumerate([(900, 1000), (50, 10**6)]):
        d = tmp_path / f"intel-rapl:{i}"
        d.mkdir()
        (d / "energy_uj").write_text(str(e))
        (d / "max_energy_range_uj").write_text(str(wrap))
    sub = tmp_path / "intel-rapl:0:0"  # a sub-domain (core): inside package 0, not added again
    sub.mkdir()
    (sub / "energy_uj").write_text("5")
    (sub / "max_energy_range_uj").write_text("1000")
    m = RaplMeter(tmp_path)
    assert m.available and len(m.domains) == 2 and m.read_j() == 0.0
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("100")  # wrapped: 900 -> 1000 -> 100
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("150")
    assert m.read_j() == pytest.approx((200 + 100) / 1e6)
