"""The fault checker names every anomaly planted in a hand-made history, and nothing in clean ones.

Method: a tiny builder writes Jepsen-style events (invoke, then ok/fail/info) with explicit times
and connections; each test plants one anomaly (or one legitimate schedule that looks like one:
TTR expiry, a close, a fault on the holder's node, indefinite outcomes) and checks the report.
"""

from __future__ import annotations

from faultkit.checker import check


class H:
    """History builder: every operation takes ``dt`` seconds and the clock moves on after it."""

    def __init__(self):
        self.events: list[dict] = []
        self.t = 1000.0

    def at(self, t: float) -> "H":
        self.t = 1000.0 + t
        return self

    def op(self, f, args=None, type_="ok", result=None, process="p1", conn=1, node="n1", dt=0.01):
        base = {"process": process, "node": node, "conn": conn, "f": f}
        self.events.append({**base, "index": len(self.events), "type": "invoke",
                            "value": args or {}, "time": self.t})
        if type_ is not None:
            self.events.append({**base, "index": len(self.events), "type": type_,
                                "value": result or {}, "time": self.t + dt})
        self.t += dt + 0.001
        return self

    # -- shorthands ------------------------------------------------------------------------

    def put(self, body, job_id=None, ttr=5, type_="ok", error=None, **kw):
        result = {"id": job_id} if type_ == "ok" else {"error": error or "timeout"}
        return self.op("put", {"body": body, "pri": 0, "delay": 0, "ttr": ttr}, type_, result, **kw)

    def reserve(self, job_id, body, **kw):
        return self.op("reserve", {"timeout": 0}, "ok", {"id": job_id, "body": body}, **kw)

    def job_op(self, f, job_id, type_="ok", error=None, **kw):
        result = {"error": error} if error else {}
        return self.op(f, {"id": job_id}, type_, result, **kw)

    def close(self, **kw):
        return self.op("close", {}, "ok", {}, **kw)

    def drain(self, job_id, body):
        self.reserve(job_id, body, process="drain", conn=999)
        return self.job_op("delete", job_id, process="drain", conn=999)

    def fault(self, kind, node, start, stop):
        self.at(start).op("fault", {"kind": kind, "nodes": [node]}, process="nemesis", node=node)
        return self.at(stop).op("heal", {"kind": kind, "nodes": [node]}, process="nemesis", node=node)

    def status(self, node, index, digest):
        return self.op("status", {}, "ok", {"digest_index": index, "digest": digest},
                       process="sampler", node=node, conn=None)

    def check(self, **kw):
        return check(self.events, owner_loss_margin_s=kw.get("margin", 5.0))


def kinds(report, name):
    return [a.get("kind") for a in report.anomalies.get(name, [])]


# ------------------------------------------------------------------------------ clean histories


def test_a_put_reserved_and_deleted_is_clean():
    h = H().put("a", 1).reserve(1, "a", conn=2, process="p2").job_op("delete", 1, conn=2, process="p2")
    report = h.check()
    assert report.valid, report.summary()


def test_a_job_left_in_the_queue_and_drained_at_the_end_is_clean():
    h = H().put("a", 1).put("b", 2)
    h.reserve(1, "a", conn=2, process="p2").job_op("release", 1, conn=2, process="p2")
    h.drain(1, "a").drain(2, "b")
    assert h.check().valid


def test_a_second_reservation_after_the_ttr_expired_is_not_double_delivery():
    h = H().put("a", 1, ttr=2)
    h.at(1).reserve(1, "a", conn=2, process="w1")
    h.at(3.5).reserve(1, "a", conn=3, process="w2")  # 2.5 s later: the TTR may have expired
    h.job_op("delete", 1, conn=3, process="w2")
    h.at(4).job_op("delete", 1, "fail", "NOT_FOUND", conn=2, process="w1")
    report = h.check()
    assert report.valid, report.summary()


def test_a_second_reservation_after_the_holder_closed_is_not_double_delivery():
    h = H().put("a", 1, ttr=100)
    h.at(1).reserve(1, "a", conn=2, process="w1").at(2).close(conn=2, process="w1")
    h.at(2.5).reserve(1, "a", conn=3, process="w2").job_op("delete", 1, conn=3, process="w2")
    assert h.check().valid


def test_a_second_reservation_after_an_indefinite_operation_of_the_holder_is_not_double_delivery():
    h = H().put("a", 1, ttr=100)
    h.at(1).reserve(1, "a", conn=2, process="w1")
    h.at(2).op("touch", {"id": 1}, "info", {"error": "timeout"}, conn=2, process="w1")
    h.at(5).reserve(1, "a", conn=3, process="w2").job_op("delete", 1, conn=3, process="w2")
    assert h.check().valid


def test_a_second_reservation_during_a_fault_on_the_holders_node_is_owner_loss_not_double_delivery():
    h = H().put("a", 1, ttr=100)
    h.at(1).reserve(1, "a", conn=2, process="w1", node="n2")
    h.fault("isolate", "n2", 2, 6)
    h.at(5).reserve(1, "a", conn=3, process="w2", node="n1")
    h.job_op("delete", 1, conn=3, process="w2", node="n1")
    assert h.check().valid


def test_indefinite_puts_and_deletes_are_never_counted_as_failures():
    h = H().put("a", type_="info").put("b", 2).put("c", 3)
    h.op("delete", {"id": 2}, "info", {"error": "EOF"}, conn=2, process="p2")  # maybe deleted
    h.drain(3, "c")  # "a" never appeared: fine, its put may not have happened
    assert h.check().valid
    h2 = H().put("a", type_="info").drain(1, "a")  # ... or may have
    assert h2.check().valid


def test_equal_digests_at_equal_indices_are_no_divergence():
    h = H().status("n1", 10, "x").status("n2", 10, "x").status("n3", 11, "y")
    report = h.check()
    assert report.valid and report.stats["indices compared across nodes"] == 1


# ------------------------------------------------------------------------------ anomalies


def test_an_acknowledged_put_missing_at_the_end_is_a_lost_job():
    h = H().put("a", 1).put("b", 2).drain(2, "b")
    report = h.check()
    assert [a["id"] for a in report.anomalies["lost-job"]] == [1]


def test_a_job_reserved_once_then_gone_without_a_delete_is_a_lost_job():
    h = H().put("a", 1).reserve(1, "a", conn=2, process="w1").close(conn=2, process="w1")
    assert [a["id"] for a in h.check().anomalies["lost-job"]] == [1]


def test_two_holders_within_the_ttr_are_double_delivery():
    h = H().put("a", 1, ttr=10)
    h.at(1).reserve(1, "a", conn=2, process="w1")
    h.at(2).reserve(1, "a", conn=3, process="w2")
    h.at(3).job_op("delete", 1, conn=3, process="w2")
    report = h.check()
    assert len(report.anomalies["double-delivery"]) == 1
    assert report.anomalies["double-delivery"][0]["because"] == "TTR"


def test_a_later_touch_by_the_first_holder_proves_double_delivery_even_after_the_ttr():
    h = H().put("a", 1, ttr=1)
    h.at(1).reserve(1, "a", conn=2, process="w1")
    h.at(5).reserve(1, "a", conn=3, process="w2")
    h.at(6).job_op("touch", 1, conn=2, process="w1")  # TOUCHED: w1 still held it
    report = h.check()
    assert [a["because"] for a in report.anomalies["double-delivery"]] == [
        "proved by a later touch/release/bury"]


def test_a_fault_on_another_node_does_not_excuse_double_delivery():
    h = H().put("a", 1, ttr=100)
    h.at(1).reserve(1, "a", conn=2, process="w1", node="n1")
    h.fault("kill", "n3", 1.5, 3)
    h.at(2).reserve(1, "a", conn=3, process="w2", node="n2")
    assert len(h.check().anomalies["double-delivery"]) == 1


def member_change(h: H, removed: str, killed: str, start: float, restarted: float,
                  rejoined: float) -> H:
    """The nemesis' membership change: remove one node while another is killed -9."""
    h.at(start).op("fault", {"kind": "member", "nodes": [removed, killed]}, process="nemesis",
                   node=removed)
    h.at(restarted).op("heal", {"kind": "kill", "nodes": [killed]}, process="nemesis", node=killed)
    return h.at(rejoined).op("heal", {"kind": "rejoin", "nodes": [removed]}, process="nemesis",
                             node=removed)


def test_a_membership_change_excuses_owner_loss_on_the_killed_node_only_until_its_restart():
    h = H().put("a", 1, ttr=100).put("b", 2, ttr=100)
    h.at(1).reserve(1, "a", conn=2, process="w1", node="n2")
    member_change(h, "n3", "n2", 2, 4, 5)
    h.at(3).reserve(1, "a", conn=3, process="w2", node="n1")  # n2 was killed: owner loss
    h.job_op("delete", 1, conn=3, process="w2", node="n1")
    h.at(20).reserve(2, "b", conn=4, process="w3", node="n2")
    h.at(30).reserve(2, "b", conn=5, process="w4", node="n1")  # long after n2 came back
    report = h.check()
    assert [a["id"] for a in report.anomalies["double-delivery"]] == [2]


def test_a_job_seen_after_its_acknowledged_delete_is_a_resurrection():
    h = H().put("a", 1).put("b", 2)
    h.job_op("delete", 1).job_op("delete", 2)
    h.op("peek", {"id": 1}, "ok", {"id": 1, "body": "a"})
    h.drain(2, "b")
    report = h.check()
    assert sorted(a["id"] for a in report.anomalies["resurrection"]) == [1, 2, 2]


def test_different_digests_at_the_same_index_are_divergence():
    h = H().status("n1", 10, "x").status("n2", 10, "z")
    report = h.check()
    assert report.anomalies["divergence"][0]["digest_index"] == 10


def test_a_refused_put_whose_job_appears_is_a_wrong_answer():
    h = H().put("a", type_="fail", error="OUT_OF_MEMORY").drain(1, "a")
    assert kinds(h.check(), "wrong-answer") == ["put-failed-but-present"]


def test_a_job_with_another_body_than_its_put_is_a_wrong_answer():
    h = H().put("a", 1).put("b", 2).drain(1, "b").drain(2, "b")
    assert "body-mismatch" in kinds(h.check(), "wrong-answer")


def test_two_puts_answered_with_the_same_id_are_a_wrong_answer():
    h = H().put("a", 1).put("b", 1).drain(1, "a")
    assert "id-reuse" in kinds(h.check(), "wrong-answer")


def test_a_body_nobody_put_is_a_phantom():
    h = H().put("a", 1).drain(1, "a").drain(2, "zzz")
    assert kinds(h.check(), "wrong-answer") == ["phantom"]


def test_not_found_for_a_job_the_connection_certainly_holds_is_a_wrong_answer():
    h = H().put("a", 1, ttr=100).reserve(1, "a", conn=2, process="w1")
    h.job_op("touch", 1, "fail", "NOT_FOUND", conn=2, process="w1")
    h.drain(1, "a")
    assert kinds(h.check(), "wrong-answer") == ["not-found-while-held"]


def test_not_found_after_the_ttr_may_have_expired_is_fine():
    h = H().put("a", 1, ttr=1).at(1).reserve(1, "a", conn=2, process="w1")
    h.at(3).job_op("touch", 1, "fail", "NOT_FOUND", conn=2, process="w1")
    h.drain(1, "a")
    assert h.check().valid


def test_deleting_a_job_another_connection_certainly_holds_is_a_wrong_answer():
    h = H().put("a", 1, ttr=100).reserve(1, "a", conn=2, process="w1")
    h.job_op("delete", 1, conn=3, process="p2")
    assert kinds(h.check(), "wrong-answer") == ["deleted-while-held"]


def test_one_body_under_two_ids_is_a_duplicate_job():
    h = H().put("a", 1).drain(1, "a").drain(2, "a")
    assert h.check().anomalies["duplicate-job"][0]["ids"] == [1, 2]


def test_an_operation_without_completion_is_indefinite():
    h = H().put("a", 1).op("delete", {"id": 1}, type_=None)  # the run ended before a reply
    report = h.check()
    assert report.valid and report.stats["delete info"] == 1


def test_a_follower_that_cut_applied_entries_is_a_problem(tmp_path):
    from types import SimpleNamespace

    from faultkit.harness import applied_entries_cut

    def node(name, text):
        path = tmp_path / f"{name}.log"
        path.write_text(text)
        return SimpleNamespace(name=name, spec=SimpleNamespace(log_path=path))

    clean = node("node1", "2026-12-06 05:02:26,821 INFO beanraft.raft: role leader -> follower\n")
    cut = node("node2", "2026-12-06 05:02:26,894 CRITICAL pysyncobj.syncobj: truncating "
                        "already-applied log entries from index 11184 (last applied: 11981)\n")
    assert applied_entries_cut(SimpleNamespace(nodes=[clean])) == []
    problems = applied_entries_cut(SimpleNamespace(nodes=[clean, cut]))
    assert len(problems) == 1 and problems[0].startswith("node2 cut entries it had applied: ")
