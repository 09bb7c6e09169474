#!/usr/bin/env python3
"""Throughput / latency benchmark: BeanRaft versus beanstalkd 1.12.

A plain script, not a pytest module (pytest only collects test_*.py / *_test.py).
Run it from the repository root:

    python tests/benchmarks/bench.py --targets beanstalkd,beanraft --seconds 5

It starts every server itself on 127.0.0.1 (free ports, fresh data directories
under a temporary directory), drives it over raw sockets, prints one table row
per (target, workload) with the ratio of each figure to beanstalkd's measured in
the same run, and stops every process it started, by PID, also on Ctrl-C,
SIGTERM or errors.  See tests/benchmarks/README.md; the code is in benchkit/, one module
per concern.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchkit, beside this script

from benchkit.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
