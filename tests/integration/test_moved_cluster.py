"""A stack cluster moved out of a root-only checkout is named by `status` and `down`, and reaped
by `cryptoflow db reap` once its checkout is deleted (running or not).

For real, as root: PostgreSQL runs as the `postgres` user, which cannot enter pytest's 0700 tmp
dirs, so LocalPostgres keeps the cluster in the scratch base (here a directory of the test's own).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cryptoflow import cli, settings
from cryptoflow_stack import passwords, postgres, stack
from cryptoflow_stack.postgres import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="the cluster moves only when the server runs as another user"
    ),
]


@pytest.fixture
def scratch(monkeypatch):
    base = Path(f"/var/tmp/cryptoflow-test-moved-{os.getpid()}")
    base.mkdir(mode=0o755, exist_ok=True)
    monkeypatch.setattr(postgres, "SCRATCH_BASE", base)
    yield base
    for moved in postgres.moved_clusters(base):
        postgres.LocalPostgres(moved.root, 0).destroy()
    shutil.rmtree(base, ignore_errors=True)


def _checkout(tmp_path: Path, name: str, monkeypatch) -> settings.Settings:
    checkout = tmp_path / name
    checkout.mkdir(mode=0o700)
    for key in list(os.environ):
        if key.startswith("CRYPTOFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOFLOW_STATE_DIR", str(checkout / ".state"))
    monkeypatch.setenv("CRYPTOFLOW_PG_PORT", str(free_port()))
    return settings.load()


def test_a_moved_cluster_is_named_then_reaped_once_its_checkout_is_gone(
    tmp_path, scratch, monkeypatch, capsys
):
    cfg = _checkout(tmp_path, "checkout", monkeypatch)
    creds, _ = passwords.ensure(cfg.credentials_file)
    pg = stack.cluster(cfg, creds)
    assert pg.moved and pg.root.parent == scratch
    pg.init()
    pg.start(fsync=False)

    cli.main(["status"])
    assert "running (pid " in (out := capsys.readouterr().out) and f"cluster in {pg.root}" in out
    cli.main(["db", "reap", "--base-dir", str(scratch)])
    assert "reaped 0 cluster(s)" in capsys.readouterr().out  # its checkout is still there
    assert pg.is_running()

    shutil.rmtree(tmp_path / "checkout")  # deleted while its server runs
    _checkout(tmp_path, "another", monkeypatch)
    cli.main(["status"])
    assert (
        f"PostgreSQL cluster {pg.root} (running) for {pg.requested_root} (deleted)"
        in capsys.readouterr().out
    )
    cli.main(["down"])
    assert "1 PostgreSQL cluster(s) of deleted checkouts remain" in capsys.readouterr().out

    cli.main(["db", "reap", "--base-dir", str(scratch)])
    out = capsys.readouterr().out
    assert "reaped 1 cluster(s)" in out and str(pg.root) in out
    assert not pg.root.exists()
    assert not postgres._postmaster_alive(pg.root)


def test_a_moved_cluster_of_unknown_origin_is_left_alone(scratch, capsys):
    legacy = scratch / f"{postgres.CLUSTER_PREFIX}0123456789ab"  # made before origins were recorded
    (legacy / "data").mkdir(parents=True)
    cli.main(["db", "reap", "--base-dir", str(scratch)])
    out = capsys.readouterr().out
    assert (
        "reaped 0 cluster(s)" in out
        and "whose checkout was never recorded" in out
        and str(legacy) in out
    )
    assert legacy.exists()
