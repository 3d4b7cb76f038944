"""The emulator's command line: `binance-emulator` on its own, or `cryptoflow replay-server`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cryptoflow import settings as settings_mod


def cmd_replay_server(args) -> int:
    """Serve real historical candles over Binance's websocket and REST protocol on loopback."""
    from binance_emulator.server import serve

    # A service's log file wants times and sources: replaces the plain console format `main` set.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    serve(
        settings_mod.load(),
        data_dirs=args.data or None,
        speed=args.speed,
        shift_to_present=not args.original_times,
        play_hours=args.play_hours,
        port=args.port,
        host=args.host,
        anchor_file=Path(args.anchor_file) if args.anchor_file else None,
    )
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        action="append",
        metavar="DIR",
        help="directory of candle files (default: CRYPTOFLOW_REPLAY_DATA or ../shared/data/cryptodatadownload)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (1 = real time)")
    p.add_argument(
        "--play-hours", type=float, default=24.0, help="hours of history played before reaching now"
    )
    p.add_argument(
        "--original-times",
        action="store_true",
        help="serve the original timestamps (no shift to now)",
    )
    p.add_argument(
        "--anchor-file",
        metavar="PATH",
        help="keep the timeline across restarts (real time only): recorded on the first start, reused after",
    )
    p.add_argument("--port", type=int, help="port (default CRYPTOFLOW_REPLAY_PORT)")
    p.add_argument("--host", help="bind address (default CRYPTOFLOW_BIND_HOST, loopback)")


def register(commands) -> None:
    """`cryptoflow replay-server` (entry point of the `cryptoflow.cli` group)."""
    add_arguments(commands.add("replay-server", cmd_replay_server))


def main(argv: list[str] | None = None) -> int:
    """`binance-emulator`: the same server without the rest of cryptoflow's commands."""
    parser = argparse.ArgumentParser(prog="binance-emulator", description=cmd_replay_server.__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_replay_server(args)
    except settings_mod.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
