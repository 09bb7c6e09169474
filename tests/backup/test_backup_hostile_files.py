"""``beanraft restore`` refuses a hostile backup file with its one-line reason, in bounded memory,
and writes nothing: a file far larger than its head announces (sparse), one announcing far more
than it holds, an endless one, a head whose numbers no cluster has (its CRC recomputed, as anyone
can), and a state whose times cannot be moved to the restore's clock (its SHA-256 recomputed).

Method: real files, the real command as a subprocess with its address space limited to 512 MiB
(RLIMIT_AS) where memory is the point, ``restore_data_dir`` itself for the rest.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from backup_kit import beanraft_argv, clean_env

from beanraft.replication.backup_file import (MAGIC, BackupFileError, encode_head,
                                              header_for)
from beanraft.replication.restore import restore_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from jobs_harness import Harness  # noqa: E402  (tests/jobs, beside this directory)

MEMORY_LIMIT = 512 << 20
FIELDS = dict(index=9, term=2, members=("127.0.0.1:7001",), node="127.0.0.1:7001",
              cluster_time_ns=1, jobs=0)


def restore_cli(source: str, target: Path) -> subprocess.CompletedProcess:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([*beanraft_argv(), "restore", source, "-b", str(target)],
                          capture_output=True, text=True, timeout=60, env=clean_env(),
                          preexec_fn=limited)


def head_announcing(body_bytes: int) -> bytes:
    """A valid head for a body of ``body_bytes`` bytes (whatever follows it)."""
    return encode_head(replace(header_for(b"x" * 100, **FIELDS), body_bytes=body_bytes))


def raw_head(doc: dict) -> bytes:
    """A head whose header is ``doc`` as JSON text, with a correct CRC."""
    raw = json.dumps(doc).encode()
    head = MAGIC + struct.pack("<HI", 1, len(raw)) + raw
    return head + struct.pack("<I", zlib.crc32(head))


@pytest.mark.parametrize("shape, message", [
    ("sparse", "bytes past the end its header announces"),
    ("announces-a-terabyte", "the backup is truncated: 100 of 1099511627776 body bytes"),
    ("endless", "not a BeanRaft backup"),
])
def test_a_file_of_another_size_than_announced_is_refused_in_bounded_memory(tmp_path, shape,
                                                                           message):
    if shape == "endless":
        source = "/dev/zero"
    else:
        path = tmp_path / f"{shape}.backup"
        with open(path, "wb") as f:
            if shape == "sparse":  # announces 100 bytes, holds 1 GiB (of holes)
                f.write(head_announcing(100) + b"x" * 100)
                f.truncate(1 << 30)
            else:
                f.write(head_announcing(1 << 40) + b"x" * 100)
        source = str(path)
    done = restore_cli(source, tmp_path / "data")
    assert done.returncode == 7, done.stderr
    assert "Traceback" not in done.stderr and message in done.stderr, done.stderr
    assert done.stderr.rstrip().endswith("nothing was written")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("change", [
    {"index": 2**64}, {"term": 2**63}, {"index": 1e400}, {"cluster_time_ns": -1e400}])
def test_a_head_with_numbers_no_cluster_has_is_refused_and_nothing_is_written(tmp_path, change):
    body = Harness().m.snapshot()
    doc = {**header_for(body, **FIELDS).to_json(), **change}
    path = tmp_path / "hostile.backup"
    path.write_bytes(raw_head(doc) + body)
    with pytest.raises(BackupFileError, match="header (holds impossible values|is malformed)"):
        restore_data_dir(str(path), str(tmp_path / "data"))
    assert os.listdir(tmp_path) == ["hostile.backup"]


def test_a_state_whose_times_cannot_be_moved_to_now_is_refused(tmp_path):
    h = Harness()
    h.put(h.open(), b"job")
    data = h.m.snapshot()
    state = msgpack.unpackb(data[1:], raw=False, use_list=True)
    # The first job's creation time (fields 10 and 7, jobs/restore.py): the largest the
    # codec holds, which any move forward overflows.
    state[10][0][7] = 2**64 - 1
    body = data[:1] + msgpack.packb(state, use_bin_type=True)
    path = tmp_path / "hostile.backup"
    path.write_bytes(encode_head(header_for(body, **FIELDS)) + body)
    with pytest.raises(BackupFileError, match="cannot be moved"):
        restore_data_dir(str(path), str(tmp_path / "data"))
    assert os.listdir(tmp_path) == ["hostile.backup"]
