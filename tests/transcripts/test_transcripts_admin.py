"""Transcripts of the admin commands: beanstalkd 1.12 answers each of purge-tube, list-jobs,
move-job, move-buried and import-job with UNKNOWN_COMMAND, and a BeanRaft node answers them as
docs/reference/extensions.md says, while plain commands keep their 1.12 replies around them.

Method: exact bytes against the real beanstalkd 1.12 and against one `beanraft serve` process
started by the ``start_server`` fixture.
"""

from __future__ import annotations

import pytest

ADMIN_LINES = [b"purge-tube default all", b"list-jobs default ready 0 10", b"move-job 1 other",
               b"move-buried default other", b"import-job binlog:1.1 buried 0 0 60 1"]


@pytest.fixture
def node(start_server):
    return start_server("beanraft")


def test_beanstalkd_answers_every_admin_command_with_unknown_command(start_server):
    wire = start_server("beanstalkd").connect()
    wire.send(b"put 0 0 60 1\r\nx\r\n")
    wire.expect(b"INSERTED 1\r\n")
    for line in ADMIN_LINES:
        wire.send(line + b"\r\n")
        wire.expect(b"UNKNOWN_COMMAND\r\n")
    assert wire.yaml(b"stats-job 1")["tube"] == "default"


def test_a_node_purges_one_state_of_a_tube_and_keeps_reserved_jobs(node):
    wire = node.connect()
    wire.send(b"use t\r\nwatch t\r\nignore default\r\n")
    wire.expect(b"USING t\r\nWATCHING 2\r\nWATCHING 1\r\n")
    wire.send(b"put 0 0 60 1\r\na\r\nput 5 0 60 1\r\nb\r\nput 0 100 60 1\r\nc\r\n"
              b"reserve\r\nput 9 0 60 1\r\nd\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nRESERVED 1 1\r\na\r\nINSERTED 4\r\n")
    wire.send(b"purge-tube t ready\r\npeek 2\r\npurge-tube t all\r\npeek 1\r\n")
    wire.expect(b"PURGED 2\r\nNOT_FOUND\r\nPURGED 1\r\nFOUND 1 1\r\na\r\n")
    wire.send(b"purge-tube nosuch all\r\npurge-tube t reserved\r\n")
    wire.expect(b"NOT_FOUND\r\nBAD_FORMAT\r\n")


def test_a_node_lists_a_tubes_jobs_in_pages(node):
    wire = node.connect()
    wire.send(b"put 3 0 60 2\r\nab\r\nput 1 0 60 0\r\n\r\nput 2 0 60 3\r\nxyz\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
    wire.send(b"list-jobs default ready 1 1\r\n")
    body = b"---\n- id: 2\n  state: ready\n  pri: 1\n  age: 0\n  size: 0\n"
    wire.expect(b"OK %d\r\n%b\r\n" % (len(body), body))
    wire.send(b"list-jobs default buried 0 10\r\nlist-jobs nosuch all 0 10\r\n"
              b"list-jobs default all 0 1001\r\n")
    wire.expect(b"OK 4\r\n---\n\r\nNOT_FOUND\r\nBAD_FORMAT\r\n")


def test_a_node_moves_a_job_and_the_buried_jobs_of_a_tube(node):
    wire = node.connect()
    wire.send(b"put 7 0 60 1\r\na\r\nput 8 0 60 1\r\nb\r\nreserve\r\nbury 1 7\r\n"
              b"reserve\r\nbury 2 8\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\nBURIED\r\n"
                b"RESERVED 2 1\r\nb\r\nBURIED\r\n")
    wire.send(b"move-job 1 side\r\nmove-buried default other\r\nmove-job 1 side\r\n"
              b"move-job 99 side\r\nmove-buried nosuch other\r\n")
    wire.expect(b"MOVED 1\r\nMOVED 1\r\nMOVED 0\r\nNOT_FOUND\r\nNOT_FOUND\r\n")
    assert wire.yaml(b"stats-job 1")["tube"] == "side"
    stats = wire.yaml(b"stats-job 2")
    assert (stats["tube"], stats["state"], stats["pri"]) == ("other", "buried", "8")
    wire.send(b"use other\r\nkick 5\r\nreserve-with-timeout 0\r\n")
    wire.expect(b"USING other\r\nKICKED 1\r\nTIMED_OUT\r\n")  # default is watched, not other


def test_a_node_never_moves_a_reserved_job(node):
    wire = node.connect()
    wire.send(b"put 0 0 60 1\r\na\r\nreserve\r\nmove-job 1 other\r\n")
    wire.expect(b"INSERTED 1\r\nRESERVED 1 1\r\na\r\nNOT_FOUND\r\n")


def test_a_node_imports_jobs_in_their_state_once_per_key(node):
    wire = node.connect()
    wire.send(b"watch t\r\nuse t\r\nimport-job k:1 buried 7 0 60 1\r\na\r\n"
              b"import-job k:2 delayed 3 100 5 2\r\nbc\r\nimport-job k:3 ready 9 0 60 0\r\n\r\n"
              b"import-job k:1 ready 0 0 60 1\r\nz\r\n")
    wire.expect(b"WATCHING 2\r\nUSING t\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n"
                b"EXISTS 1\r\n")
    for job_id, state, pri in ((1, "buried", "7"), (2, "delayed", "3"), (3, "ready", "9")):
        stats = node.connect().yaml(b"stats-job %d" % job_id)
        assert (stats["tube"], stats["state"], stats["pri"]) == ("t", state, pri)
    wire.send(b"reserve-with-timeout 0\r\nreserve-with-timeout 0\r\n")
    wire.expect(b"RESERVED 3 0\r\n\r\nTIMED_OUT\r\n")  # never the buried or the delayed job
    wire.send(b"import-job k:4 ready 0 5 60 1\r\nx\r\nimport-job k:4 delayed 0 0 60 1\r\nx\r\n")
    wire.expect(b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\nBAD_FORMAT\r\nUNKNOWN_COMMAND\r\n")


EXTENSION_COUNTERS = ["cmd-session-id", "cmd-session-resume", "cmd-purge-tube", "cmd-list-jobs",
                      "cmd-move-job", "cmd-move-buried", "cmd-import-job"]


def test_stats_shows_the_extension_counters_only_to_a_connection_that_used_an_extension(node):
    from beanraft.protocol import STATS_KEYS

    plain, admin = node.connect(), node.connect()
    admin.send(b"list-jobs default ready 0 1\r\npurge-tube nosuch all\r\npurge-tube t x\r\n"
               b"use t\r\nimport-job k:9 buried 0 0 60 1\r\nx\r\nmove-buried t u\r\n"
               b"move-job 1 t\r\nimport-job k:9 ready 0 0 5 1\r\ny\r\n")
    admin.expect(b"OK 4\r\n---\n\r\nNOT_FOUND\r\nBAD_FORMAT\r\nUSING t\r\nINSERTED 1\r\nMOVED 1\r\n"
                 b"MOVED 1\r\nEXISTS 1\r\n")
    assert list(plain.yaml(b"stats")) == list(STATS_KEYS)  # beanstalkd's keys, nothing more
    stats = admin.yaml(b"stats")
    assert list(stats) == list(STATS_KEYS) + EXTENSION_COUNTERS
    # A malformed command is not counted, as in beanstalkd; a remembered key is.
    assert [stats[key] for key in EXTENSION_COUNTERS] == ["0", "0", "1", "1", "1", "1", "2"]
    assert stats["cmd-put"] == "0" and stats["total-jobs"] == "1"
