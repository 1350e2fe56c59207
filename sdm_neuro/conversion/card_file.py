"""What the card of a converted model says about where its parts run (``card.write_card`` writes it)."""
from __future__ import annotations

HOST_SIDE = ("Host side (real-valued MACs), as for the directly trained SNN: the first conv `head` "
             "(direct encoding: its output is the same input current at each of the T steps), the "
             "time-embedding MLP and per-block projections (a per-timestep bias table), and the readout "
             "decode (mean of the tail synapses' current over T). Spiking (ACs on the chip): every IF "
             "population and the synapses between them; the pre-spike residual sums, skip "
             "concatenations, 1x1 shortcuts and BatchNorm (folded, eval statistics of the quantised ANN) "
             "are linear in the spikes and fold into those synapses at export. No signed neurons "
             "(the paper drops Fast-SNN's signed IF neuron for diffusion): spikes are positive only.")
