"""The benchmark behind ``tests/benchmarks/bench.py``, one module per concern."""
