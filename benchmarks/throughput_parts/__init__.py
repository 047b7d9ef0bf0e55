"""The pieces of `benchmarks/throughput.py` (see its docstring)."""
