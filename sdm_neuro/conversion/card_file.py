"""Write a model card (TOML) for a converted model: the card tables plus provenance and notes."""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from ..card import ModelCard

HOST_SIDE = ("Host side (real-valued MACs), as for the directly trained SNN: the first conv `head` "
             "(direct encoding: its output is the same input current at each of the T steps), the "
             "time-embedding MLP and per-block projections (a per-timestep bias table), and the readout "
             "decode (mean of the tail synapses' current over T). Spiking (ACs on the chip): every IF "
             "population and the synapses between them; the pre-spike residual sums, skip "
             "concatenations, 1x1 shortcuts and BatchNorm (folded, eval statistics of the quantised ANN) "
             "are linear in the spikes and fold into those synapses at export. No signed neurons "
             "(the paper drops Fast-SNN's signed IF neuron for diffusion): spikes are positive only.")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string is a JSON string


def card_toml(card: ModelCard, provenance: dict, notes: dict, header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    for table, values in [*card.to_dict().items(), ("provenance", provenance), ("notes", notes)]:
        lines += ["", f"[{table}]"] + [f"{k} = {_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_card(path: str | Path, card: ModelCard, provenance: dict, notes: dict, header: str) -> None:
    write_text(path, card_toml(card, provenance, notes, header))
