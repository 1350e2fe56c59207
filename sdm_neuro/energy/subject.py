"""What an energy report is about: the spiking network (checkpoint, card or export) and its ANN twin."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..card import card_from_dict, load_card
from ..checkpoint import load_model
from ..diffusion import NoiseSchedule
from ..errors import SdmError
from ..export.h5format import read_graph
from ..export.lava import build_graph
from ..models import build_model

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


@dataclass
class Subject:
    """The spiking network the report is about."""

    ref: str
    source: str  # "export" | "checkpoint" | "card"
    card: object | None = None  # ModelCard (None for an export whose card is not found)
    model: torch.nn.Module | None = None  # the PyTorch SNN (None for an export)
    trained: bool = False
    graph: object | None = None  # export Graph (quantised), None for an untrained card
    schedule: object | None = None
    info: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.card is not None:
            return self.card.model.name
        return str(self.info.get("meta", {}).get("model", Path(self.ref).stem))


def _find_card(name: str, near: Path | None = None):
    for folder in ([near] if near else []) + [MODELS_DIR]:
        p = Path(folder) / f"{name}.toml"
        if p.is_file():
            return load_card(p)
    return None


def load_subject(ref: str | Path) -> Subject:
    ref = str(ref)
    if Path(ref).suffix in (".h5", ".hdf5"):

        graph, info = read_graph(ref)
        sub = Subject(ref, "export", graph=graph, schedule=NoiseSchedule.from_betas(info["betas"]), info=info, trained=True)
        name = info["meta"].get("model")
        card = _find_card(name, Path(ref).parent) if name else None
        if card is not None and (card.model.kind != "snn" or card.T != graph.T or
                                 (card.model.in_channels, card.model.image_size, card.model.image_size)
                                 != tuple(graph.image_shape)):
            sub.notes.append(f"model card {name}.toml does not match the export's shape; not used")
            card = None
        if card is not None:
            sub.card = card
            sub.notes.append(f"architecture (for MAC counts) from the model card {name}.toml")
        else:
            sub.notes.append("no model card for this export: time-embedding MACs and the ANN twin need --ann")
        return sub
    model, card, ckpt = load_model(ref, require_trained=False)
    if card.model.kind != "snn":
        raise SdmError(f"{ref} is an ANN (kind 'ann'); energy-report takes a spiking model or its export "
                       "(give the ANN twin with --ann)")
    sub = Subject(ref, "card" if Path(ref).suffix == ".toml" else "checkpoint", card=card, model=model,
                  trained=ckpt is not None, schedule=NoiseSchedule.from_card(card))
    if ckpt is None:
        sub.notes.append("untrained card (no checkpoint): no counting run and no bias-map MACs here; firing "
                         "rates only from --spikes (or give a trained checkpoint or an export)")
    else:
        sub.graph = build_graph(model, card)
        sub.info = {"checkpoint_step": int(ckpt.get("step", 0))}
    return sub


# ModelSpec fields that describe the spiking neuron only; the ReLU twin takes their defaults
# (a converted SNN's quant_bits, reset and v_init would make the twin a quantised ANN, or invalid).
SPIKING_ONLY_FIELDS = ("threshold", "surrogate_alpha", "neuron", "tsm", "reset", "v_init", "quant_bits")


def ann_twin_card(card):
    """The ANN twin of a spiking card: same architecture (channels, blocks, time embedding), ReLU,
    T = 1; the spiking-only fields (``SPIKING_ONLY_FIELDS``) are dropped."""
    d = card.to_dict()
    for key in SPIKING_ONLY_FIELDS:
        d["model"].pop(key, None)
    d["model"].update({"kind": "ann", "T": 1, "activation": "relu", "name": f"{card.model.name}-ann-twin"})
    return card_from_dict(d)


def resolve_ann(subject: Subject, ann_ref: str | None):
    """(ANN model, card, trained, how it was found) or (None, None, False, reason)."""
    if ann_ref:
        model, card, ckpt = load_model(ann_ref, require_trained=False)
        if card.model.kind != "ann":
            raise SdmError(f"--ann {ann_ref} is not an ANN (model.kind is {card.model.kind!r})")
        return model, card, ckpt is not None, f"--ann {ann_ref}"
    if subject.card is None:
        return None, None, False, "no ANN twin: the export has no model card here (give --ann)"
    name = subject.card.model.name
    sibling = name[:-4] + "-ann" if name.endswith("-snn") else name + "-ann"
    near = subject.card.path.parent if subject.card.path else Path(subject.ref).parent
    for folder in (near, MODELS_DIR):
        p = Path(folder) / f"{sibling}.toml"
        if p.is_file():
            model, card, ckpt = load_model(p, require_trained=False)
            if card.model.kind == "ann":
                return model, card, ckpt is not None, f"sibling card {p}"
    card = ann_twin_card(subject.card)
    torch.manual_seed(0)
    return build_model(card).eval(), card, False, "twin built from the SNN's card (same architecture, ReLU, T = 1)"


