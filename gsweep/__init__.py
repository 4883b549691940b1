"""gsweep: vmapped, sharded sweeps of small transformers that map grokking and multi-step reasoning."""

__version__ = "0.1.0"
