"""Spark's Python workers run the project's own interpreter, never the PATH's `python3`.

On a new machine `python3` has none of the project's packages: a worker started with it fails on
the first Arrow UDF (`No module named 'pyarrow'`). These tests fail whenever a worker runs any
interpreter other than the one running the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration


def _worker_interpreters(spark) -> set[str]:
    import pyarrow as pa

    def report(batches):
        import sys as worker_sys

        for _ in batches:
            yield pa.RecordBatch.from_pydict({"python": [worker_sys.executable]})

    rows = spark.range(0, 4, numPartitions=2).mapInArrow(report, "python string").collect()
    return {r.python for r in rows}


def test_session_workers_run_the_project_interpreter(spark):
    from cryptoflow.spark import worker_python

    assert worker_python() == sys.executable
    assert _worker_interpreters(spark) == {sys.executable}


def test_workers_ignore_a_python3_on_path_without_the_packages(scratch_dir):
    """A PATH whose first python3 is a bare interpreter (no pyarrow) does not reach the workers."""
    bare = scratch_dir / "bin"
    bare.mkdir()
    marker = scratch_dir / "bare-python-ran"
    (bare / "python3").write_text(
        f"#!/bin/sh\ntouch {marker}\necho 'bare python3 has no pyarrow' >&2\nexit 1\n"
    )
    (bare / "python3").chmod(0o755)
    script = textwrap.dedent("""
        import sys
        from cryptoflow.spark import local_session
        from tests.integration.test_spark_interpreter import _worker_interpreters
        spark = local_session("interpreter-check", master="local[1]")
        print("WORKERS", sorted(_worker_interpreters(spark)))
        spark.stop()
    """)
    env = {**os.environ, "PATH": f"{bare}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYSPARK_PYTHON", None)
    res = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert f"WORKERS {[sys.executable]}" in res.stdout
    assert not marker.exists()
