"""The local stack's commands, added to the cryptoflow command line by the `cryptoflow.cli` entry
point: up (with --demo), down, status, airflow, db reap."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cryptoflow import settings as settings_mod


def cmd_up(args) -> int:
    """Start PostgreSQL, Airflow and Superset on loopback (set-up on first run)."""
    import os

    from cryptoflow_stack import stack

    # The environment alone decides what this stack runs with: not the last stack's stack.env.
    cfg = settings_mod.load(stack_file=False)
    before_airflow = None
    if args.demo:
        from cryptoflow_stack import demo

        cfg = demo.demo_settings(os.environ)
        # The feed first: the scheduler's first ingest runs would otherwise meet "connection refused".
        before_airflow = lambda s: demo.start_feed(s)  # noqa: E731
    try:
        with stack.stopped_if_interrupted(cfg):
            endpoints = stack.up(
                cfg, with_superset=not args.no_superset, before_airflow=before_airflow
            )
            cfg = endpoints.settings
            if args.demo:
                from cryptoflow_stack.airflow import AirflowApi

                api = AirflowApi(
                    endpoints.airflow,
                    settings_mod.read_credentials(cfg.credentials_file)["AIRFLOW_ADMIN_PASSWORD"],
                )
                api.wait_for_dags({"binance_ingest"})
                demo.run(cfg, api, hours=args.history_hours)
    except stack.PortTaken as exc:
        print(f"cryptoflow up: nothing started: {exc}", file=sys.stderr)
        return 2
    except stack.Interrupted as exc:
        print(f"cryptoflow up: {exc}", file=sys.stderr)
        return 130
    return 0


def cmd_airflow(args) -> int:
    """Run Airflow's CLI with the local stack's environment (e.g. `cryptoflow airflow dags list`)."""
    import os

    from cryptoflow_stack import stack

    argv = list(args.airflow_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        env = stack.stack_airflow_env(settings_mod.load())
    except stack.NotSetUp as exc:
        print(
            f"cryptoflow airflow: {exc}: run `make run` or `cryptoflow up` first", file=sys.stderr
        )
        return 2
    airflow = Path(sys.executable).parent / "airflow"
    if not airflow.exists():
        print(
            f"cryptoflow airflow: {airflow} not found (is this Airflow's virtualenv?)",
            file=sys.stderr,
        )
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(airflow), [str(airflow), *argv], env)  # airflow's exit status is ours
    return 0  # not reached (except where execve is replaced, as in tests)


def cmd_down(args) -> int:
    """Stop every service of the local stack."""
    from cryptoflow_stack import stack

    stack.down(settings_mod.load())
    return 0


def cmd_status(args) -> int:
    """Show which local services are running."""
    from cryptoflow_stack import stack

    from cryptoflow_stack import process
    from cryptoflow_stack.postgres import moved_clusters

    cfg = settings_mod.load()
    states = stack.status(cfg)
    for name, state in states.items():
        print(f"{name:24} {state}")
    tracked = {int(m) for state in states.values() for m in re.findall(r"pid (\d+)", state)}
    strays = [
        p
        for p in process.stack_processes(cfg.state_dir)
        if p.pgid not in tracked and p.pid not in tracked
    ]
    if strays:
        print(
            f"{'(no pid file)':24} {len(strays)} process(es) of this stack: "
            + ", ".join(p.describe() for p in strays[:5])
            + " (`cryptoflow down` stops them)"
        )
    for moved in moved_clusters():
        if moved.checkout_gone:
            print(
                f"{'(deleted checkout)':24} PostgreSQL cluster {moved.describe()} (`cryptoflow db reap` removes it)"
            )
    return 0


def cmd_db_reap(args) -> int:
    """Stop and remove the PostgreSQL clusters nobody owns any more: throwaway ones whose owner (e.g.
    a killed test run) is dead, and stack clusters moved out of a checkout that was deleted."""
    from cryptoflow_stack import postgres

    base = Path(args.base_dir) if args.base_dir else postgres.SCRATCH_BASE
    moved_clusters, reap_moved_clusters, reap_orphaned_clusters = (
        postgres.moved_clusters,
        postgres.reap_moved_clusters,
        postgres.reap_orphaned_clusters,
    )
    reaped = reap_orphaned_clusters(base)
    moved = reap_moved_clusters(base)
    print(
        f"reaped {len(reaped) + len(moved)} cluster(s)"
        + "".join(f"\n  {root}" for root in reaped)
        + "".join(f"\n  {m.describe()}" for m in moved)
    )
    unknown = [m for m in moved_clusters(base) if m.origin is None]
    if unknown:
        print(
            f"left {len(unknown)} cluster(s) whose checkout was never recorded (remove by hand if unused): "
            + "; ".join(m.describe() for m in unknown)
        )
    return 0


def register(commands) -> None:
    add = commands.add
    p = add("up", cmd_up)
    p.add_argument("--no-superset", action="store_true", help="start PostgreSQL and Airflow only")
    p.add_argument(
        "--demo",
        action="store_true",
        help="also run the main job: Binance feed (replay where Binance is out of reach), "
        "collector, seeded history and the DAG chain",
    )
    p.add_argument(
        "--history-hours",
        type=float,
        default=480.0,
        help="hours of history the demo seeds (default 480)",
    )
    add("down", cmd_down)
    add("status", cmd_status)
    p = add("airflow", cmd_airflow)
    p.usage = "cryptoflow airflow [-h] AIRFLOW_ARGS..."
    p.add_argument(
        "airflow_args",
        nargs=argparse.REMAINDER,
        metavar="AIRFLOW_ARGS",
        help="passed verbatim to `airflow` (e.g. backfill create --dag-id binance_ingest "
        "--from-date 2026-11-20T00:00 --to-date 2026-11-20T06:00)",
    )

    p = add("reap", cmd_db_reap, group="db")
    p.add_argument("--base-dir", help="where throwaway clusters live (default /var/tmp)")
    commands.verbatim["airflow"] = "airflow_args"
