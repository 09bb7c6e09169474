"""Runs ``beanraft`` as an earlier version would treat rules versions: ``python earlier_rules.py
MODE serve …``. Stand-ins for the nodes of a rolling upgrade (or of a downgrade):

* ``silent``: a BeanRaft from before rules versions. It never tells its peers a rules version
  and answers a RULES entry as any unknown command (ERROR), going on by rules 1.
* ``only-1``: a BeanRaft that knows rules versions but applies only version 1.

Everything else is this version's code.
"""

from __future__ import annotations

import sys


def silent() -> None:
    from beanraft.jobs import machine
    from beanraft.replication import rules

    rules.RulesCensus.install = lambda self: None  # tells nothing, hears nothing
    machine.Machine._switch_rules = lambda self, version: ("ERROR", "unknown op")


def only_one() -> None:
    """Run it with ``--max-rules 1``: the flag's range is this version's."""
    from beanraft.jobs import machine, snapshot
    from beanraft.replication import rules

    for module in (machine, snapshot, rules):
        module.RULES_SUPPORTED = 1


if __name__ == "__main__":
    {"silent": silent, "only-1": only_one}[sys.argv[1]]()
    from beanraft.node.cli import main

    sys.argv = ["beanraft", *sys.argv[2:]]
    main()
