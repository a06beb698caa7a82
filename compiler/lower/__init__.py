"""Lowering of layers to NPU chains: each emitter turns one layer into one chain over a planned layout."""
