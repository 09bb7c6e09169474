"""Timers set alike by commands of one packet end in the order they were set, as in 1.12.

beanstalkd 1.12 reads a nanosecond clock for each command, so equal delays, TTRs and pauses set
in one packet end in the order set. BeanRaft applies such a packet at one time and, from rules
version 3 (jobs/state.py, ``order``), ends them in the order set too; before it they fell to
the job id or tube name. Each test expects 1.12's bytes on every target.
"""

import time


def test_jobs_reserved_in_one_packet_time_out_in_the_order_they_were_reserved(server):
    # 1.12 expires them in the order of their deadlines, which is the order of the reserves;
    # BeanRaft's batch gives both one deadline, and rules 3 ends them in the order set: 2, 1.
    holder, worker = server.connect(), server.connect()
    holder.send(b"use c\r\nwatch c\r\nput 5 0 2 1\r\na\r\nput 0 0 2 1\r\nb\r\n")
    holder.expect(b"USING c\r\nWATCHING 2\r\nINSERTED 1\r\nINSERTED 2\r\n")
    holder.send(b"reserve-with-timeout 0\r\nreserve-with-timeout 0\r\n")
    holder.expect(b"RESERVED 2 1\r\nb\r\nRESERVED 1 1\r\na\r\n")
    worker.send(b"watch c\r\nignore default\r\nreserve\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    time.sleep(2.3)
    holder.send(b"list-tube-used\r\n")  # 1.12 may miss a silent holder's TTR (§13): poke it
    holder.expect(b"USING c\r\n")
    worker.expect(b"RESERVED 2 1\r\nb\r\n")


def test_jobs_released_with_equal_delays_in_one_packet_become_ready_in_the_order_released(server):
    holder, worker = server.connect(), server.connect()
    holder.send(b"use c\r\nput 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nreserve-job 1\r\nreserve-job 2\r\n")
    holder.expect(b"USING c\r\nINSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\nRESERVED 2 1\r\nb\r\n")
    worker.send(b"watch c\r\nignore default\r\nreserve\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 1\r\n")
    holder.send(b"release 2 0 1\r\nrelease 1 0 1\r\n")
    holder.expect(b"RELEASED\r\nRELEASED\r\n")
    worker.expect(b"RESERVED 2 1\r\nb\r\n", timeout=3)


def test_tubes_paused_alike_in_one_packet_unpause_in_the_order_paused(server):
    # 1.12 serves the waiter as each pause ends: b's first, so it gets b's job though a's job
    # is the more urgent.
    holder, worker = server.connect(), server.connect()
    holder.send(b"use a\r\nput 5 0 60 1\r\na\r\nuse b\r\nput 0 0 60 1\r\nb\r\n")
    holder.expect(b"USING a\r\nINSERTED 1\r\nUSING b\r\nINSERTED 2\r\n")
    holder.send(b"pause-tube b 1\r\npause-tube a 1\r\n")
    holder.expect(b"PAUSED\r\nPAUSED\r\n")
    worker.send(b"watch a\r\nwatch b\r\nignore default\r\nreserve\r\n")
    worker.expect(b"WATCHING 2\r\nWATCHING 3\r\nWATCHING 2\r\n")
    worker.expect(b"RESERVED 2 1\r\nb\r\n", timeout=3)


def test_peek_delayed_and_kick_take_the_job_released_first_among_equal_delays(server):
    wire = server.connect()
    wire.send(b"put 0 0 60 1\r\na\r\nput 0 0 60 1\r\nb\r\nreserve-job 1\r\nreserve-job 2\r\n")
    wire.expect(b"INSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\nRESERVED 2 1\r\nb\r\n")
    wire.send(b"release 2 0 60\r\nrelease 1 0 60\r\npeek-delayed\r\n")
    wire.expect(b"RELEASED\r\nRELEASED\r\nFOUND 2 1\r\nb\r\n")
    wire.send(b"kick 1\r\npeek-ready\r\npeek-delayed\r\n")
    wire.expect(b"KICKED 1\r\nFOUND 2 1\r\nb\r\nFOUND 1 1\r\na\r\n")
