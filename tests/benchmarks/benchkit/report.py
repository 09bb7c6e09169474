"""Figures to text: medians over rounds, the table with ratios to the baseline, the header."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess

from .common import Result, WORKLOAD_LABEL
from .servers import beanraft_command


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v:.3f}"
    if v < 100:
        return f"{v:.2f}"
    return f"{v:,.0f}"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}x" if v < 0.1 else f"{v:.2f}x"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def aggregate(results: list[Result]) -> Result:
    """Median of each figure over the rounds that succeeded."""
    ok = [r for r in results if r.ok]
    if not ok:
        return results[-1]
    if len(ok) == 1 and len(results) == 1:
        return ok[0]
    m = Result(ok[0].target, ok[0].workload, rounds=len(ok))

    def med(name):
        vals = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        return statistics.median(vals) if vals else None

    for name in ("seconds", "rate", "p50_ms", "p99_ms", "mean_ms", "server_cpu_pct", "client_cpu_pct"):
        setattr(m, name, med(name))
    m.ops = int(statistics.median(r.ops for r in ok))
    m.error_replies = sum(r.error_replies for r in ok)
    m.first_error_reply = next((r.first_error_reply for r in ok if r.first_error_reply), "")
    m.notes = sorted({n for r in ok for n in r.notes})
    if len(ok) < len(results):
        m.notes.append(f"{len(results) - len(ok)} of {len(results)} rounds failed: "
                       + next(r.error for r in results if not r.ok))
    return m


def render_table(rows: list[Result], baseline: str) -> str:
    base = {r.workload: r for r in rows if r.target == baseline and r.ok}
    head = ["target", "workload", "ops", "secs", "ops/s", "p50 ms", "p99 ms", "mean ms",
            "srv cpu", "cli cpu", "errs", "ops/s vs bs", "p50 vs bs", "p99 vs bs", "notes"]
    right = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
    table = []
    for r in rows:
        wl = WORKLOAD_LABEL.get(r.workload, r.workload)
        if not r.ok:
            table.append([r.target, wl] + ["-"] * 12 + ["FAILED: " + r.error])
            continue
        b = base.get(r.workload)
        notes = list(r.notes)
        if r.first_error_reply:
            notes.append(f"first error reply: {r.first_error_reply}")
        if r.client_cpu_pct is not None and r.client_cpu_pct > 90:
            notes.append("load generator near 100% CPU")
        table.append([
            r.target, wl, f"{r.ops:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}",
            fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), fmt_ms(r.mean_ms),
            "-" if r.server_cpu_pct is None else f"{r.server_cpu_pct:.0f}%",
            "-" if r.client_cpu_pct is None else f"{r.client_cpu_pct:.0f}%",
            str(r.error_replies),
            fmt_ratio(ratio(r.rate, b.rate) if b else None),
            fmt_ratio(ratio(r.p50_ms, b.p50_ms) if b else None),
            fmt_ratio(ratio(r.p99_ms, b.p99_ms) if b else None),
            "; ".join(notes),
        ])
    widths = [max(len(head[i]), *(len(row[i]) for row in table)) if table else len(head[i])
              for i in range(len(head))]
    widths[-1] = 0  # notes: not padded

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths[:-1]] + ["-----"])]
    out += [line(row) for row in table]
    return "\n".join(out)


def fs_type(path: str) -> str:
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for ln in f:
                parts = ln.split()
                if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) >= len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def header_info(args) -> dict:
    try:
        v = subprocess.run([args.beanstalkd, "-v"], capture_output=True, timeout=5, text=True)
        bver = (v.stdout or v.stderr).strip() or "?"
    except (OSError, subprocess.SubprocessError):
        bver = "not runnable"
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": nproc,
        "python": platform.python_version(),
        "beanstalkd": bver,
        "loadavg": load,
        "kernel": platform.release(),
        "data_dir": args.data_dir,
        "data_fs": fs_type(args.data_dir),
        "beanraft_cmd": " ".join(beanraft_command(args)),
    }




def issue_ratios(rows: list[Result]) -> list[dict]:
    """Each BeanRaft row set as the three ratios performance.md quotes: put/s and worker cycle/s
    to beanstalkd -b (default fsync), 1x1 put p50 to beanstalkd -b -f 0. Empty unless the run
    measured the baselines these need."""
    got = {(r.target, r.workload): r for r in rows if r.ok}
    fast, fsync = "beanstalkd-b", "beanstalkd"
    if not any(t == fast for t, _ in got) and not any(t == fsync for t, _ in got):
        return []
    out = []
    for target in dict.fromkeys(r.target for r in rows):
        if target.startswith("beanstalkd"):
            continue

        def rel(workload, base, field):
            a, b = got.get((target, workload)), got.get((base, workload))
            return ratio(getattr(a, field), getattr(b, field)) if a and b else None

        put1 = got.get((target, "put1"))
        out.append({"target": target, "put": rel("put", fast, "rate"), "cycle": rel("rd", fast, "rate"),
                    "put1_p50": rel("put1", fsync, "p50_ms"),
                    "put1_p50_ms": put1.p50_ms if put1 else None})
    return out


def render_ratios(ratios: list[dict]) -> str:
    head = ["target", "put/s vs -b", "cycle/s vs -b", "1x1 put p50 vs -b -f 0", "1x1 put p50 ms"]
    table = [[r["target"], fmt_ratio(r["put"]), fmt_ratio(r["cycle"]), fmt_ratio(r["put1_p50"]),
              fmt_ms(r["put1_p50_ms"])] for r in ratios]
    widths = [max(len(head[i]), *(len(row[i]) for row in table)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [head, ["-" * w for w in widths]] + table]
    return "\n".join(line.rstrip() for line in lines)
