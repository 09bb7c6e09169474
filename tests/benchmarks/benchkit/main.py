"""The command line: parse the flags, run every target each round, print the table."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict

from .common import DEFAULT_BEANSTALKD, MAX_OPS_DEFAULT, MAX_PRELOAD_DEFAULT, Result, TARGET_CHOICES, TargetFailed, WORKLOAD_LABEL
from .report import aggregate, header_info, issue_ratios, ratio, render_ratios, render_table
from .servers import Ctx, Ports, Procs, Target, _load_libc, make_target
from .workloads import bench_endpoint


RATIO_TARGETS = "beanstalkd-b,beanstalkd,beanraft,cluster"


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Benchmark BeanRaft against beanstalkd 1.12 (put/s, reserve+delete/s, latency).")
    p.add_argument("--targets", default="beanstalkd,beanraft",
                   help="comma list of: " + ", ".join(TARGET_CHOICES)
                   + " (default beanstalkd,beanraft; the --baseline target is always added)")
    p.add_argument("--seconds", type=float, default=5.0, help="duration cap of each workload (default 5)")
    p.add_argument("--connections", type=int, default=50, help="pipelined connections (default 50)")
    p.add_argument("--window", type=int, default=20, help="commands in flight per connection (default 20)")
    p.add_argument("--body-size", type=int, default=100, help="job body bytes (default 100)")
    p.add_argument("--workloads", default="put,rd,put1,rd1",
                   help="comma list of put, rd, put1, rd1 (default: all)")
    p.add_argument("--preload", type=int, default=0,
                   help="total jobs queued before each reserve+delete workload (default 0 = auto: "
                        "3x the jobs the matching put workload inserted)")
    p.add_argument("--max-preload", type=int, default=MAX_PRELOAD_DEFAULT,
                   help=f"cap on the auto preload (default {MAX_PRELOAD_DEFAULT:,})")
    p.add_argument("--preload-seconds", type=float, default=None,
                   help="time cap of each preload (default max(20, 4 x --seconds))")
    p.add_argument("--max-ops", type=int, default=MAX_OPS_DEFAULT,
                   help=f"count cap of each workload (default {MAX_OPS_DEFAULT:,})")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat all targets this many times, interleaved; report medians (default 1)")
    p.add_argument("--no-binlog", action="store_true",
                   help="also measure beanstalkd without -b (target beanstalkd-mem, in memory)")
    p.add_argument("--baseline", default="beanstalkd", choices=("beanstalkd", "beanstalkd-mem"),
                   help="target the ratio columns divide by (default beanstalkd, i.e. -b DIR -f 0)")
    p.add_argument("--beanstalkd", default=DEFAULT_BEANSTALKD, help="beanstalkd binary")
    p.add_argument("--beanraft-cmd", default="",
                   help="command that runs the BeanRaft CLI (default: the `beanraft` console script, "
                        "else `python -m beanraft.node`)")
    p.add_argument("--data-dir", default=tempfile.gettempdir(),
                   help="where the servers' data directories are created (default: system temp dir)")
    p.add_argument("--keep-data", action="store_true", help="do not delete the data directories and logs")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("--insecure-cluster", action="store_true",
                   help="run the cluster without a secret (peer traffic neither sealed nor "
                        "authenticated), to see what sealing costs")
    p.add_argument("--keep-going", action="store_true",
                   help="after a workload fails on a target, still run that target's other workloads "
                        "(default: skip them)")
    p.add_argument("--reserve-timeout", type=int, default=0,
                   help="the reserve+delete rows send reserve-with-timeout N (default 0: never "
                        "waits; 1 waits while the queue is empty, as workers and the C generator do)")
    p.add_argument("--ratios", action="store_true",
                   help="the side-by-side run of docs/reference/performance.md: targets "
                        f"{RATIO_TARGETS}, workloads put,rd,put1, 16 connections x 16 in flight, "
                        "reserve-with-timeout 1 (each unless given), then the ratio summary")
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    args = p.parse_args(argv)
    if args.ratios:
        for flag, name, value in (("--targets", "targets", RATIO_TARGETS), ("--workloads", "workloads", "put,rd,put1"),
                                  ("--connections", "connections", 16), ("--window", "window", 16),
                                  ("--reserve-timeout", "reserve_timeout", 1)):
            if flag not in given:
                setattr(args, name, value)
    if args.reserve_timeout < 0:
        p.error("--reserve-timeout must be >= 0")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in TARGET_CHOICES]
    if bad:
        p.error(f"unknown target(s) {', '.join(bad)}; choose from {', '.join(TARGET_CHOICES)}")
    if args.no_binlog and "beanstalkd-mem" not in targets:
        targets.append("beanstalkd-mem")
    if args.baseline not in targets:
        targets.insert(0, args.baseline)
    args.target_list = list(dict.fromkeys(targets))
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workloads or any(w not in WORKLOAD_LABEL for w in args.workloads):
        p.error("--workloads: comma list of put, rd, put1, rd1")
    for name in ("seconds", "connections", "window", "body_size", "max_ops", "rounds", "max_preload"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.preload < 0:
        p.error("--preload must be >= 0")
    if args.body_size > 65535:
        p.error("--body-size must be <= 65535 (beanstalkd's default max job size)")
    if args.preload_seconds is None:
        args.preload_seconds = max(20.0, 4 * args.seconds)
    args.body = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (args.body_size // 36 + 1))[: args.body_size]
    args.max_ops = int(args.max_ops)
    return args




_signal_received = 0


def _on_signal(signum, frame):
    # SIGTERM / SIGHUP behave like Ctrl-C: stop the servers, print what was measured.
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


def log(msg: str) -> None:
    """Progress goes to stderr; the table goes to stdout."""
    print(msg, file=sys.stderr, flush=True)


class Tally:
    """The results of every round, per (target, workload) row, in the order rows first appeared."""

    def __init__(self):
        self.per_row: dict[tuple[str, str], list[Result]] = {}
        self.order: list[tuple[str, str]] = []
        self.target_status: dict[str, str] = {}

    def add(self, results: list[Result], notes: list[str]) -> None:
        for r in results:
            k = (r.target, r.workload)
            if k not in self.per_row:
                self.order.append(k)
            if notes and r.ok:
                r.notes.extend(notes)
            self.per_row.setdefault(k, []).append(r)

    def rows(self) -> list[Result]:
        return [aggregate(self.per_row[k]) for k in self.order]


def run_target(name: str, rnd: int, ctx: Ctx, tally: Tally) -> None:
    """Starts one target, runs every workload on each of its endpoints, stops it; or, for a
    target that wants it (the cluster), does so once per endpoint on a target started for it."""
    target = make_target(name, ctx)
    if not target.fresh_per_endpoint:
        _run_started(target, name, name, rnd, ctx, tally)
        return
    for label in target.labels:
        _run_started(make_target(name, ctx, only=label), name, f"{name} for {label}", rnd, ctx,
                     tally)


def _run_started(target: Target, name: str, shown: str, rnd: int, ctx: Ctx, tally: Tally) -> None:
    log(f"[round {rnd}] starting {shown} ...")
    results: list[Result] = []
    try:
        endpoints = target.start()
        log(f"[round {rnd}] {shown} ready on port(s) " + ", ".join(f"{e.label}={e.port}" for e in endpoints))
        tally.target_status.setdefault(name, "ok")
        for ep in endpoints:
            bench_endpoint(ep, ctx.args, rnd, log, results)
        try:
            target.after(endpoints)
        except TargetFailed as e:
            target.notes.append(f"after the run: {e}")
    except TargetFailed as e:
        tally.target_status[name] = f"failed to start: {e}"
        log(f"[round {rnd}] {shown}: FAILED to start: {e}")
        short = str(e) if len(str(e)) <= 100 else str(e)[:97] + "..."
        for label in target.measured_labels():
            results.append(Result(label, "all", ok=False, error=f"did not start: {short} (full reason below)"))
    finally:
        target.stop()
        tally.add(results, target.notes)  # recorded even when interrupted half-way through this target


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _load_libc()
    procs = Procs()
    atexit.register(procs.stop_all)  # backstop; the finally below normally does it
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    os.makedirs(args.data_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="beanraft-bench-", dir=args.data_dir)
    ctx = Ctx(args, procs, Ports(), workdir)
    info = header_info(args)
    tally = Tally()
    interrupted = False
    try:
        log(f"benchmark: targets {', '.join(args.target_list)}; {args.seconds:g} s per workload; "
            f"data in {workdir}")
        for rnd in range(1, args.rounds + 1):
            for name in args.target_list:
                run_target(name, rnd, ctx, tally)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping servers; figures so far follow")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        procs.stop_all()
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    rows = tally.rows()
    print_report(args, info, rows, tally.target_status)
    if args.json:
        write_json(args, info, rows, tally.target_status, interrupted)
    if interrupted:
        return 128 + (_signal_received or signal.SIGINT)
    return 0 if all(r.ok for r in rows) else 1


def print_report(args, info: dict, rows: list[Result], target_status: dict[str, str]) -> None:
    print(f"# {info['date']}  nproc {info['nproc']}  Python {info['python']}  {info['beanstalkd']}  "
          f"loadavg {info['loadavg']}  data on {info['data_fs']} ({info['data_dir']})")
    print(f"# {args.seconds:g} s per workload, {args.connections} connections x {args.window} in flight, "
          f"{args.body_size}-byte bodies, rounds {args.rounds}; ratios vs {args.baseline} "
          f"({'-b DIR -f 0, fsync before replying' if args.baseline == 'beanstalkd' else 'no binlog'}) "
          f"measured in this run; latency = send -> reply (pair: reserve sent -> DELETED)")
    if "cluster" in args.target_list:
        print("# cluster peer traffic: " + ("not sealed (--insecure)" if args.insecure_cluster
                                            else "sealed with the cluster secret"))
    print(render_table(rows, args.baseline))
    for name, st in target_status.items():
        if st != "ok":
            print(f"# {name}: {st}")
    ratios = issue_ratios(rows)
    if ratios:
        print()
        print(f"# ratios to beanstalkd measured in this run: put/s and worker cycle/s (reserve-with-timeout "
              f"{args.reserve_timeout} -> delete) to beanstalkd -b (fsync at most every 50 ms), 1x1 put "
              f"p50 to beanstalkd -b -f 0 (fsync before each reply); loadavg at the end "
              f"{_loadavg()}")
        print(render_ratios(ratios))


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def write_json(args, info: dict, rows: list[Result], target_status: dict[str, str],
               interrupted: bool) -> None:
    doc = {"header": info,
           "config": {k: getattr(args, k) for k in (
               "seconds", "connections", "window", "body_size", "preload", "max_preload",
               "preload_seconds", "max_ops", "rounds", "baseline", "target_list", "workloads",
               "reserve_timeout")},
           "loadavg_at_end": _loadavg(),
           "ratios": issue_ratios(rows),
           "targets": target_status,
           "interrupted": interrupted,
           "results": [dict(asdict(r), workload_label=WORKLOAD_LABEL.get(r.workload, r.workload))
                       for r in rows]}
    base = {r.workload: r for r in rows if r.target == args.baseline and r.ok}
    for r in doc["results"]:
        b = base.get(r["workload"])
        r["ratio_vs_baseline"] = None if not (b and r["ok"]) else {
            "rate": ratio(r["rate"], b.rate), "p50": ratio(r["p50_ms"], b.p50_ms),
            "p99": ratio(r["p99_ms"], b.p99_ms), "mean": ratio(r["mean_ms"], b.mean_ms)}
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
    log(f"figures written to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
