#!/usr/bin/env python3
"""Soak BeanRaft under the fault nemesis for a while, then check the history.

    python tests/tools/soak.py --seconds 600            # a random seed, printed first
    python tests/tools/soak.py --seed 1234 --seconds 600 # replay that run's schedule
    python tests/tools/soak.py --kinds kill,isolate      # only some fault kinds

Needs root for network namespaces and tmpfs (else: loopback, kill and pause only). Exits 0 when
the checker found no anomaly and the harness no problem; the report names a directory holding the
history, the report and the nodes' logs otherwise. See tests/faults/faultkit/harness.py.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from faultkit.harness import RunConfig, random_seed, run  # noqa: E402
from faultkit.nemesis import KINDS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="workload duration (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed (default: random)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated fault kinds (default {','.join(KINDS)})")
    parser.add_argument("--layout", choices=("auto", "netns", "loopback"), default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="where to keep logs and history")
    parser.add_argument("--keep", action="store_true", help="keep the work directory on success too")
    args = parser.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    # SIGTERM unwinds like Ctrl-C, so the nodes, mounts and namespaces are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    seed = args.seed if args.seed is not None else random_seed()
    result = run(RunConfig(seed=seed, seconds=args.seconds, kinds=kinds, layout=args.layout,
                           workdir=args.workdir, keep_workdir=args.keep))
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
