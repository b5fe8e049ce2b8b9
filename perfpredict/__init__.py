"""perfpredict: measure on a proxy device, predict latency and memory with a GNN, search deployment plans."""

__version__ = "0.1.0"
