"""The start-up check of the pysyncobj seam fires for each way pysyncobj can stop fitting BeanRaft.

Method: each private place listed in ``seam.POINTS`` is monkeypatched away in turn (from the
module, the class, or the live pysyncobj object of a real RaftNode) and the check must name it; the
installed version is changed; and the raft port is made to take unsealed messages in two ways (the
encryptor pysyncobj reads is not ours; the transport stops sealing accepted connections), which the
sealed-port probe, a real unsealed frame over a socket pair, must catch. A node that passes every
check is built first, so a check that always fails cannot pass this file either. Last, real
``beanraft serve`` processes, started on a pysyncobj patched the same ways before BeanRaft is
imported, must exit with status 70 and one line naming the reason.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys

import pysyncobj.version
import pytest
from pysyncobj.syncobj import SyncObj
from pysyncobj.transport import TCPTransport
from upstream import free_port

from beanraft.replication import seam
from beanraft.replication.raft import RaftConfig, RaftNode

LIBRARY_POINTS = [p for p in seam.POINTS if p.owner.split(":")[0] in ("module", "class")]
INSTANCE_POINTS = [p for p in seam.POINTS if p.owner in ("syncobj", "transport", "notifier")]


def build_node(tmp_path, secret="the cluster secret"):
    """A single RaftNode (raft port on loopback, no tick run) built through every check."""
    loop = asyncio.new_event_loop()
    config = RaftConfig(self_addr=f"127.0.0.1:{free_port()}", data_dir=str(tmp_path),
                        secret=secret)
    try:
        return RaftNode(config, loop, on_events=lambda events: None), loop
    except BaseException:
        loop.close()
        raise


def _owner(point):
    kind, _, dotted = point.owner.partition(":")
    if kind == "module":
        return importlib.import_module(dotted)
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_a_node_on_the_pysyncobj_it_was_written_for_passes_every_check(tmp_path):
    node, loop = build_node(tmp_path)
    try:
        seam.check_library()
        seam.check_instance(node._sync)
        seam.check_sealed(node._sync, node._sync.encryptor)
    finally:
        node.stop()
        loop.close()


def test_every_point_has_a_reason_and_names_are_not_repeated():
    assert all(p.reason for p in seam.POINTS)
    assert len({(p.owner, p.name) for p in seam.POINTS}) == len(seam.POINTS)


def test_another_pysyncobj_version_is_refused_naming_both_versions(monkeypatch):
    monkeypatch.setattr(pysyncobj.version, "VERSION", "0.3.18")
    with pytest.raises(seam.SeamError, match=r"pysyncobj 0\.3\.18 is installed.*0\.3\.17"):
        seam.check_library()


@pytest.mark.parametrize("point", LIBRARY_POINTS, ids=lambda p: p.name)
def test_a_module_or_class_point_that_is_gone_is_named(monkeypatch, point):
    monkeypatch.delattr(_owner(point), point.name)
    with pytest.raises(seam.SeamError, match=rf"{point.name} is missing") as caught:
        seam.check_library()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("point", [p for p in seam.POINTS if p.replaced], ids=lambda p: p.name)
def test_a_replaced_point_that_pysyncobj_took_back_is_refused(monkeypatch, point):
    monkeypatch.setattr(_owner(point), point.name, object())
    with pytest.raises(seam.SeamError, match=rf"{point.name} is not BeanRaft's"):
        seam.check_library()


@pytest.mark.parametrize("point", INSTANCE_POINTS, ids=lambda p: p.name)
def test_an_instance_point_that_is_gone_is_named(monkeypatch, tmp_path, point):
    node, loop = build_node(tmp_path)
    try:
        holder = {"syncobj": node._sync, "transport": seam.transport(node._sync),
                  "notifier": seam.pipe_notifier(node._sync)}[point.owner]
        if point.name in vars(holder):  # an attribute, or a method we wrapped on the object
            monkeypatch.delattr(holder, point.name)
        for cls in type(holder).__mro__:  # the method itself lives on a class
            if point.name in vars(cls):
                monkeypatch.delattr(cls, point.name)
        with pytest.raises(seam.SeamError, match=rf"{point.name} is missing"):
            seam.check_instance(node._sync)
    finally:
        monkeypatch.undo()
        node.stop()
        loop.close()


def test_a_node_refuses_to_start_when_pysyncobj_reads_its_encryptor_elsewhere(monkeypatch, tmp_path):
    # As if a release renamed the private attribute: ours would be set and never read.
    monkeypatch.setattr(SyncObj, "encryptor", property(lambda self: None))
    with pytest.raises(seam.SeamError, match="would accept unauthenticated messages"):
        build_node(tmp_path)


def test_the_probe_catches_a_transport_that_no_longer_seals_accepted_connections(monkeypatch,
                                                                                 tmp_path):
    accept = TCPTransport._onNewIncomingConnection

    def accept_unsealed(self, conn):
        accept(self, conn)
        conn.encryptor = None

    monkeypatch.setattr(TCPTransport, "_onNewIncomingConnection", accept_unsealed)
    with pytest.raises(seam.SeamError, match="an unsealed frame was taken by the transport"):
        build_node(tmp_path)


def test_a_refused_node_releases_its_raft_port_and_data_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(SyncObj, "encryptor", property(lambda self: None))
    with pytest.raises(seam.SeamError):
        build_node(tmp_path)
    monkeypatch.undo()
    node, loop = build_node(tmp_path)  # the same directory: its lock and journal were let go
    node.stop()
    loop.close()


SERVE_WITH = "import sys; {patch}; from beanraft.node.cli import main; sys.argv[0] = 'beanraft'; main()"


@pytest.mark.parametrize("patch, reason", [
    ("import pysyncobj.version as v; v.VERSION = '0.4.0'", "pysyncobj 0.4.0 is installed"),
    ("import pysyncobj.syncobj as s; del s.createJournal",
     "pysyncobj patch point pysyncobj.syncobj.createJournal is missing"),
    ("import pysyncobj.syncobj as s; s.SyncObj.encryptor = property(lambda self: None)",
     "would accept unauthenticated messages"),
], ids=["version", "patch-point", "unsealed"])
def test_beanraft_serve_refuses_to_start_with_one_line_naming_the_reason(tmp_path, patch, reason):
    argv = [sys.executable, "-c", SERVE_WITH.format(patch=patch), "serve", "-l", "127.0.0.1",
            "-p", str(free_port()), "-b", str(tmp_path / "data")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 70, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and reason in errors[0], done.stderr
    assert "Traceback" not in done.stderr
