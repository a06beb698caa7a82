"""Helpers the test suite, the testbenches and the benchmarks share (importable, so nothing edits ``sys.path``).

* ``strategies``: hypothesis strategies for random legal programs;
* ``exact``: exact rational rounding used as an independent reference;
* ``examples``: a 3x3 convolution in assembly with its DRAM image and reference.
"""
