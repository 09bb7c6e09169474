"""Runs the chosen workloads on one endpoint, preloading the queue for the reserve rows."""

from __future__ import annotations

from .common import BenchError, Result, WORKLOADS
from .pipelined import finish_pipelined, preload, run_pipelined
from .report import fmt_ms
from .serial import serial_put, serial_reserve_delete
from .servers import Endpoint


def auto_preload(args, already: int, factor: float) -> int:
    if args.preload:
        want = args.preload
    else:
        want = max(1000, int(already * factor))
    return max(0, min(want, args.max_preload) - already)


def bench_endpoint(ep: Endpoint, args, rnd: int, log, out: list[Result]) -> None:
    """Runs the workloads on one endpoint, appending each Result to `out` as it completes."""
    tube_p = f"bench.{ep.label}.{rnd}.p".encode()
    tube_s = f"bench.{ep.label}.{rnd}.s".encode()
    state = {"put_jobs": 0, "put1_jobs": 0}

    def fill(tube: bytes, have: int, factor: float) -> int:
        if have or args.preload:
            return preload(ep, tube, args, auto_preload(args, have, factor))
        # the matching put workload did not run: put for `factor` x --seconds instead
        return preload(ep, tube, args, args.max_preload, min(args.preload_seconds, factor * args.seconds))

    def w_put(res):
        run = run_pipelined("put", ep, tube_p, args, args.seconds, args.max_ops, res)
        state["put_jobs"] = run.ok_total
        return finish_pipelined(res, run)

    def w_rd(res):
        have = state["put_jobs"]
        have += fill(tube_p, have, 3.0)
        run = run_pipelined("rd", ep, tube_p, args, args.seconds, args.max_ops, res)
        if run.drained_at is not None:
            res.notes.append(f"queue ({have:,} jobs) drained after {res.seconds:.1f} s; raise --preload")
        finish_pipelined(res, run)
        if run.drained_at is not None and not res.ops:
            res.error = f"reserve found the queue empty (TIMED_OUT) although {have:,} jobs were put"
        return res

    def w_put1(res):
        serial_put(ep, tube_s, args, res)
        state["put1_jobs"] = res.ops
        return res

    def w_rd1(res):
        have = state["put1_jobs"]
        have += fill(tube_s, have, 3.0)
        serial_reserve_delete(ep, tube_s, args, res)
        if not res.ok and res.notes and "drained" in res.notes[-1]:
            res.error = f"reserve found the queue empty (TIMED_OUT) although {have:,} jobs were put"
        return res

    steps = {"put": w_put, "rd": w_rd, "put1": w_put1, "rd1": w_rd1}
    failed = ""
    for key, label in WORKLOADS:
        if key not in args.workloads:
            continue
        res = Result(ep.label, key)
        if failed and not args.keep_going:
            res.ok, res.error = False, f"skipped after an earlier failure ({failed[:60]})"
            out.append(res)
            continue
        try:
            steps[key](res)
        except (OSError, BenchError, TimeoutError, ValueError) as e:
            res.ok = False
            res.error = str(e) or type(e).__name__
            dead = [p for p in ep.procs if p.poll() is not None]
            if dead:
                res.error = f"server PID {dead[0].pid} exited (code {dead[0].returncode}): " + res.error
        if not res.ok:
            failed = res.error
        out.append(res)
        log(f"  {ep.label:<17} {label:<27} " + (
            f"{res.rate:>11,.0f}/s  p50 {fmt_ms(res.p50_ms)} ms  p99 {fmt_ms(res.p99_ms)} ms"
            + (f"  errors {res.error_replies}" if res.error_replies else "")
            + (f"  [{'; '.join(res.notes)}]" if res.notes else "")
            if res.ok else f"FAILED: {res.error}"))


