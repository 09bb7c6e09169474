"""Goal: applications written against beanraft.client see no error, lose no job, run no job
twice and create no duplicate while the cluster loses, freezes and restarts nodes under them.

Method: client_faults.run -- three producers and three workers (Client threads, and once
AsyncClient tasks) with all three addresses, a seeded nemesis that kill -9s or SIGSTOPs the
leader or any node every ~2-3 s, then a drain and the checks listed there. Short runs here; the
long run is `.venv/bin/python tests/client/client_faults.py --seconds 60 --seeds 1 2 3 4 5`.
"""

from __future__ import annotations

import pytest
from client_faults import run


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed,flavour", [(1, "blocking"), (2, "blocking"), (3, "async")])
def test_producers_and_workers_ride_through_kills_and_freezes(seed, flavour, tmp_path):
    outcome = run(seed, seconds=10, workdir=tmp_path / "run", flavour=flavour)
    print(outcome.summary())
    assert outcome.faults, "the nemesis injected nothing"
    assert outcome.acked, "no put was acknowledged"
    assert outcome.problems() == []
