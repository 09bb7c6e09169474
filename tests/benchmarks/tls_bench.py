"""What TLS and authentication cost: worker-cycle throughput of one node with TLS, and with TLS
and --auth-file, against the same node plaintext without authentication.

Not a test (pytest does not collect it). Three ``beanraft serve`` processes run side by side:
plain, one with ``--tls-cert``/``--tls-key`` (a certificate from a private CA that trustme
makes here), and one with TLS and ``--auth-file`` (one principal that produces to and consumes
from ``w*``; each connection sends ``auth`` first, so every command is checked against it). Against each in turn, ``--workers`` asyncio connections each repeat a worker
cycle for ``--seconds``: ``put``, ``reserve-with-timeout 0``, ``delete``, one command at a
time (what a worker pool does; with fsync before each reply, as by default). The rounds
alternate between the nodes and the medians are reported, with their ratios to plaintext.

    .venv/bin/python tests/benchmarks/tls_bench.py                       # 3 rounds of 5 s
    .venv/bin/python tests/benchmarks/tls_bench.py --rounds 1 --seconds 1 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trustme

from beanraft.node import launcher, principals

HOST = "127.0.0.1"
BODY = b"x" * 100


async def worker(port: int, context: ssl.SSLContext | None, clock: dict, tube: str,
                 auth: bytes, ready: asyncio.Barrier, start: asyncio.Event) -> int:
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=context, server_hostname=HOST if context else None)
    cycles = 0
    try:
        if auth:
            writer.write(auth)
            assert await reader.readline() == b"AUTHENTICATED\r\n"
        writer.write(f"use {tube}\r\nwatch {tube}\r\nignore default\r\n".encode())
        for _ in range(3):
            await reader.readline()
        # Connections (handshake, auth's scrypt) are set up before the clock starts: what is
        # measured is the cycles of connections that are already open, as a worker pool's are.
        await ready.wait()
        await start.wait()
        until = clock["until"]
        put = b"put 0 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
        while time.monotonic() < until:
            writer.write(put)
            assert (await reader.readline()).startswith(b"INSERTED")
            writer.write(b"reserve-with-timeout 0\r\n")
            header = await reader.readline()
            assert header.startswith(b"RESERVED"), header
            await reader.readexactly(int(header.split()[2]) + 2)
            writer.write(b"delete " + header.split()[1] + b"\r\n")
            assert await reader.readline() == b"DELETED\r\n"
            cycles += 1
    finally:
        writer.close()
    return cycles


async def measure(port: int, context, workers: int, seconds: float, auth: bytes) -> float:
    clock: dict = {}
    ready, start = asyncio.Barrier(workers + 1), asyncio.Event()
    tasks = [asyncio.create_task(worker(port, context, clock, f"w{i}", auth, ready, start))
             for i in range(workers)]
    await ready.wait()
    started = time.monotonic()
    clock["until"] = started + seconds
    start.set()
    counts = await asyncio.gather(*tasks)
    return sum(counts) / (time.monotonic() - started)


def wait_ready(port: int, context, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as raw:
                sock = context.wrap_socket(raw, server_hostname=HOST) if context else raw
                sock.sendall(b"list-tube-used\r\n")
                if sock.recv(100) in (b"USING default\r\n", b"AUTH_REQUIRED\r\n"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the node on port {port} did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per node, alternating")
    parser.add_argument("--workers", type=int, default=16, help="connections doing worker cycles")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        root = Path(tmp)
        ca = trustme.CA()
        issued = ca.issue_cert(HOST)
        cert, key = root / "cert.pem", root / "key.pem"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        key.write_bytes(issued.private_key_pem.bytes())
        os.chmod(key, 0o600)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        token = principals.new_token()
        auth_file = root / "auth.toml"
        auth_file.write_text(f'[principal.bench]\ntoken-hash = "{principals.hash_token(token)}"\n'
                             f'produce = ["w*"]\nconsume = ["w*"]\n')
        os.chmod(auth_file, 0o600)
        tls_flags = ["--tls-cert", str(cert), "--tls-key", str(key)]
        ports = launcher.free_ports(3)
        nodes = {}
        for name, port, flags, context, auth in (
                ("plain", ports[0], [], None, b""),
                ("tls", ports[1], tls_flags, client_context, b""),
                ("tls+auth", ports[2], tls_flags + ["--auth-file", str(auth_file)], client_context,
                 f"auth bench {token}\r\n".encode())):
            spec = launcher.NodeSpec(name, HOST, port, None, None, root / name)
            nodes[name] = (launcher.ServeProcess(spec, [], extra_args=flags,
                                                 log_path=root / f"{name}.log"), context, auth)
        try:
            for process, context, _auth in nodes.values():
                process.start()
                wait_ready(process.spec.client_port, context)
            rates = {name: [] for name in nodes}
            for round_ in range(args.rounds):
                for name, (process, context, auth) in nodes.items():
                    rate = asyncio.run(measure(process.spec.client_port, context, args.workers,
                                               args.seconds, auth))
                    rates[name].append(rate)
                    print(f"round {round_ + 1}: {name:8} {rate:9,.0f} cycles/s", file=sys.stderr)
        finally:
            launcher.stop_all(process for process, _, _ in nodes.values())
    plain, tls, both = (statistics.median(rates[name]) for name in ("plain", "tls", "tls+auth"))
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}  nproc {os.cpu_count()}  "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}  {ssl.OPENSSL_VERSION}")
    print(f"worker cycles (put, reserve-with-timeout 0, delete), {args.workers} connections, "
          f"median of {args.rounds} x {args.seconds:g} s")
    print(f"plaintext  {plain:9,.0f} cycles/s")
    print(f"TLS        {tls:9,.0f} cycles/s   ({tls / plain:.2f}x plaintext, "
          f"{100 * (1 - tls / plain):.0f} % less)")
    print(f"TLS+auth   {both:9,.0f} cycles/s   ({both / plain:.2f}x plaintext, "
          f"{100 * (1 - both / plain):.0f} % less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
