"""Without the ``lava`` extra (Python 3.11+, or 3.10 with the core only): what needs Lava says so
in one line, names the Python and the extra, and what runs instead; never a traceback. On 3.10
with Lava installed the same paths run with Lava hidden (monkeypatched availability)."""
import sys

import pytest

from sdm_neuro import lava_extra, slayer_compat
from sdm_neuro.lava_extra import lava_nc_available

from tests.test_reliability import SHIPPED_EXPORT, assert_one_error, cli, files_under


def test_availability_follows_the_python_version():
    """lava-nc is reported importable on 3.10 only (its wheels declare >=3.10,<3.11)."""
    if sys.version_info[:2] != (3, 10):
        assert not lava_nc_available()
    assert lava_extra.needs_lava("x").startswith("x needs the `lava` extra")


def test_simulate_without_lava_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(lava_extra, "lava_nc_available", lambda: False)
    out = tmp_path / "sim"
    result = cli(capsys, "simulate", SHIPPED_EXPORT, "--timestep", 10, "--n", 1, "--out", out)
    assert_one_error(result, "simulate EXPORT (a Lava run) needs the `lava` extra")
    _, stdout, err = result
    line = err.strip()
    assert len(line.splitlines()) == 1 and not stdout
    for part in ("Python 3.10", "pip install -e '.[lava]'", f"this Python {sys.version.split()[0]}",
                 "`sdm-neuro sample EXPORT --executor fixed` runs the same fixed-point arithmetic"):
        assert part in line, line
    assert files_under(out) == []


def test_simulate_bad_export_is_reported_before_lava_is_needed(monkeypatch, capsys, tmp_path):
    """Input errors come first: a missing export file is named, with or without Lava."""
    monkeypatch.setattr(lava_extra, "lava_nc_available", lambda: False)
    result = cli(capsys, "simulate", tmp_path / "missing.lava.h5", "--timestep", 10, "--out", tmp_path / "sim")
    assert result[0] == 2 and "lava` extra" not in result[2] and "missing.lava.h5" in result[2]


def test_slayer_cuba_card_without_lava_dl_is_one_line(monkeypatch):
    from sdm_neuro.neurons import IFNeuron
    from sdm_neuro.errors import SdmError

    monkeypatch.setattr(slayer_compat, "slayer_available", lambda: False)
    with pytest.raises(SdmError, match=r"model.neuron 'slayer-cuba' .* needs the `lava` extra .*Python 3.10"):
        IFNeuron(T=4, impl="slayer-cuba")
    IFNeuron(T=4, impl="if")  # the default neuron needs nothing of Lava
