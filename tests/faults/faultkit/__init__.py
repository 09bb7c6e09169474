"""Fault-injection kit for BeanRaft: private networks, a process cluster, a seeded workload, a
nemesis, a Jepsen-style history and its checker. Used by tests/faults and tests/tools."""
