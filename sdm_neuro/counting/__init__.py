"""Counting what a network does: MACs of a model, synaptic ops and spikes of a deployed run, the spikes file."""
