"""Goal: the disk cost counted for each applied batch is that of its well-formed puts.

Method: hypothesis draws batches of puts (of any body size), other commands and malformed ones,
as a decoded entry holds them; ``put_cost`` must equal ``job_cost`` summed over the puts alone.
The admission of new jobs on a tight volume (``disk.py``) subtracts this figure from what it
admitted, so a wrong one refuses jobs that fit, or admits jobs that do not.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from beanraft.jobs.commands import Op
from beanraft.replication.disk import job_cost, jobs_cost
from beanraft.replication.entries import put_cost

_PUT = st.binary(max_size=300).map(lambda body: (int(Op.PUT), 7, 1, 0, 0, 60, body))
_OTHER = st.sampled_from([
    (int(Op.DELETE), 7, 2, 1),
    (int(Op.PUT), 7, 3, 0, 0, 60),  # a put without its body
    (int(Op.PUT), 7, 3, 0, 0, 60, "text, not bytes"),
    (int(Op.DELETE), 7, 2, 1, 0, 0, b"seven fields, not a put"),
    [int(Op.PUT), 7, 4, 0, 0, 60, b"a list, as another decoder may give"],
    "not a command",
    42,
])


@given(st.lists(st.one_of(_PUT, _OTHER), max_size=40))
def test_a_batchs_cost_is_its_puts_job_costs(batch):
    expected = sum(job_cost(len(c[6])) for c in batch
                   if isinstance(c, (list, tuple)) and len(c) == 7 and c[0] == Op.PUT
                   and isinstance(c[6], bytes))
    assert put_cost(batch) == expected


@given(st.lists(st.integers(0, 1 << 20), max_size=20))
def test_the_cost_of_jobs_together_is_the_sum_of_their_costs(sizes):
    assert jobs_cost(len(sizes), sum(sizes)) == sum(job_cost(size) for size in sizes)
