"""What a command shows where: progress lines on stdout (as the commands always printed them),
warnings on stderr, and no other library's INFO chatter."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from cryptoflow import cli

pytestmark = pytest.mark.quick

SCRIPT = """
import logging
from cryptoflow import cli
cli.configure_console_logging()
cli.configure_console_logging()  # twice: still one line per record
logging.getLogger("cryptoflow_stack.stack").info("starting PostgreSQL")
logging.getLogger("cryptoflow_stack.stack").warning("port taken")
logging.getLogger("cryptoflow.sources.binance.rest").info("page fetched")
logging.getLogger("cryptoflow_bench").info("running benchmark x")
"""


def test_progress_on_stdout_problems_on_stderr_in_a_fresh_process():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["starting PostgreSQL", "running benchmark x"]
    assert res.stderr.splitlines() == ["port taken"]


def test_progress_follows_a_replaced_stdout(capsys):
    cli.configure_console_logging()
    logging.getLogger("cryptoflow_stack.demo").info("Collector started")
    assert "Collector started" in capsys.readouterr().out
