"""docs/how-to/principals.md, run as written: its shell blocks in bash, its Python block in this
interpreter, against the node its serve block starts (on a free port instead of 11300).

Method: the fenced ``sh`` and ``python`` blocks are read from the page in order; a real
``beanraft serve`` runs the serve block; the outputs of the operator's commands are checked.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from authkit import Line

from beanraft.node import launcher

PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "principals.md"
BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.S)


def test_the_principals_how_to_runs_as_written(tmp_path):
    blocks = BLOCK.findall(PAGE.read_text())
    assert [kind for kind, _ in blocks] == ["sh", "sh", "python", "sh"]
    port = str(launcher.free_ports(1)[0])
    setup, serve, python, operator = (text.replace("11300", port) for _, text in blocks)
    bindir = str(Path(launcher.beanraft_program()[0]).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEANRAFT_")}
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")

    def sh(script: str) -> str:
        done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    checked = sh(setup)
    assert "workers (token)" in checked and "administer: *" in checked
    assert "plain" not in (tmp_path / "auth.toml").read_text()
    argv = shlex.split(serve.strip())
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=launcher.die_with_parent)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                line = Line(("127.0.0.1", int(port)), timeout_s=2)
                ready = line.request(b"stats\r\n") == b"AUTH_REQUIRED\r\n"
                line.close()
                if ready:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "orders-api may not reserve" in done.stdout
        out = sh(operator)
        lines = out.splitlines()
        assert lines[:3] == ["default", "orders", "orders"], out  # ops sees both, workers one
        assert "purged 1 buried job(s) of tube orders" in lines[-1], out
    finally:
        server.terminate()
        server.wait(timeout=30)
