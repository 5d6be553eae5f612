"""voltool on an engine that keeps no container logs (default log driver `none`).

Helpers' results must not depend on the log driver: snapshot, restore and
verify all run helpers whose output voltool reads.
"""

from __future__ import annotations

import uuid

import pytest

from tests.integration.dockertools import SMALL_TREE, records, voltool
from tests.integration.second_daemon import SecondDaemon

pytestmark = pytest.mark.engine


def test_snapshot_restore_verify_on_an_engine_whose_log_driver_is_none(
    log_none_daemon: SecondDaemon,
) -> None:
    host = log_none_daemon.host
    client = log_none_daemon.client()
    try:
        assert client.info()["LoggingDriver"] == "none"
        helper = [t for i in client.images.list() for t in i.tags if t.startswith("voltool/")]
        assert helper, "the helper image was not built into the second dockerd"
        source, target = f"vt-{uuid.uuid4().hex[:12]}", f"vt-{uuid.uuid4().hex[:12]}"
        client.volumes.create(source)
        try:
            # No logs to read back here: populate with a container and check its exit code.
            c = client.containers.create(
                helper[0],
                ["-c", SMALL_TREE],
                entrypoint=["/bin/sh"],
                volumes={source: {"bind": "/v", "mode": "rw"}},
                network_mode="none",
            )
            try:
                c.start()
                assert c.wait(timeout=60)["StatusCode"] == 0
            finally:
                c.remove(force=True)

            r = voltool("-H", host, "snapshot", "--json", source)
            assert r.code == 0, r.err
            snap = records(r.out)[0]
            r = voltool("-H", host, "restore", "--yes", "--create", "--to", target, snap["id"])
            assert r.code == 0, r.err
            r = voltool("-H", host, "verify", "--json", snap["id"])
            assert r.code == 0, r.err
            # What helpers printed was read: the listing needs their output, and the
            # restored volume's digest is the snapshot's.
            r = voltool("-H", host, "list", "--json", source)
            assert r.code == 0, r.err
            assert [s["id"] for s in records(r.out)] == [snap["id"]]
            r = voltool("-H", host, "digest", target)
            assert r.code == 0, r.err
            assert r.out.split()[0] == snap["tree_digest"]
            # Only the snapshots' keepers stay (they hold the snapshot volumes).
            left = [
                c
                for c in client.containers.list(all=True)
                if c.labels.get("io.voltool.role") != "keeper"
            ]
            assert left == [], "voltool left containers behind"
        finally:
            for c in client.containers.list(all=True):
                c.remove(force=True)
            for v in client.volumes.list():
                v.remove(force=True)
    finally:
        client.close()
