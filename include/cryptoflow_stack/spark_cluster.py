"""A Spark standalone cluster on loopback, from pyspark's own distribution (no Docker, no sbin/).

    with StandaloneCluster(workers=2, cores_per_worker=1, memory="1g") as cluster:
        spark-submit --master cluster.master_url ...

The same daemons docker-compose runs (`spark-class ...deploy.master.Master` / `...worker.Worker`),
so the spark:// path can be run for real on one machine: executors in their own JVMs, Python
workers forked by them, nothing shared with the driver but the network and the file system.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptoflow_stack.postgres import free_port
from cryptoflow.spark import worker_python


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def java_home() -> str:
    """JAVA_HOME if set, else the JDK of the `java` on PATH: the one bootstrap.sh checks (17+).

    Made explicit so the daemons, the executors they fork and spark-submit all run one Java even
    when other JDKs are installed (this machine also has a Temurin 25 that Spark 4.2 does not support).
    """
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if not java:
        raise RuntimeError("no java on PATH and JAVA_HOME unset (make setup installs Java 17)")
    return str(Path(java).resolve().parent.parent)


def _die_with_parent() -> None:
    """In the child before exec: its own process group (so stop() takes executors and Python workers
    with it), and SIGTERM when the test process dies, even by SIGKILL, so no daemon outlives it.
    (Linux sends it when the forking *thread* ends: enter the cluster from a thread that outlives it.)"""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class StandaloneCluster:
    """A master and `workers` workers on 127.0.0.1; `master_url` once entered; all stopped on exit."""

    def __init__(
        self,
        workers: int = 2,
        cores_per_worker: int = 1,
        memory: str = "1g",
        env: dict[str, str] | None = None,
        start_timeout: float = 120.0,
    ):
        self.workers, self.cores, self.memory = workers, cores_per_worker, memory
        self.extra_env = env or {}
        self.start_timeout = start_timeout
        self.procs: list[subprocess.Popen] = []
        self.dir: Path | None = None
        self.master_url = ""
        self.webui_url = ""

    def env(self) -> dict[str, str]:
        """The daemons' environment; executors inherit it (spark-submit should get the same Java)."""
        assert self.dir is not None
        conf = self.dir / "conf"  # empty: no spark-defaults.conf or log4j of anyone else's
        conf.mkdir(exist_ok=True)
        return {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "JAVA_HOME": java_home(),
            "SPARK_CONF_DIR": str(conf),
            # Every listener (RPC, web UIs, block managers) on loopback only.
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(self.dir / "logs"),
            "SPARK_LOCAL_DIRS": str(self.dir / "local"),  # executors' shuffle/block files
            # The master's REST submission server would take the fixed port 6066 (a second
            # cluster, or a real one, on this machine would collide); spark-submit needs none.
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
            # The driver names the executors' Python (spark.pyspark.python); this covers anything
            # a worker would start on its own with the default `python3` from PATH.
            "PYSPARK_PYTHON": worker_python(),
            **self.extra_env,
        }

    def __enter__(self) -> "StandaloneCluster":
        self.dir = Path(tempfile.mkdtemp(prefix="cryptoflow-spark-cluster-"))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.dir is not None
        (self.dir / "logs").mkdir(exist_ok=True)
        with open(self.dir / "logs" / f"{name}.log", "wb") as log:
            self.procs.append(
                subprocess.Popen(
                    [str(spark_home() / "bin" / "spark-class"), *args],
                    env=self.env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            )

    def _start(self) -> None:
        assert self.dir is not None
        port, ui = free_port(), free_port()
        self.master_url, self.webui_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}"
        self._spawn(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
        )
        for i in range(self.workers):
            work = self.dir / f"work-{i}"
            work.mkdir()
            self._spawn(
                f"worker-{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    self.master_url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(self.cores),
                    "--memory",
                    self.memory,
                    "--webui-port",
                    str(free_port()),
                    "--work-dir",
                    str(work),
                ],
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"a Spark daemon exited with {dead[0].returncode} while starting\n{self.log_tails()}"
                )
            if len(self.alive_workers()) == self.workers:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.alive_workers())}/{self.workers} workers ALIVE after "
                    f"{self.start_timeout:.0f} s\n{self.log_tails()}"
                )
            time.sleep(0.5)

    def state(self) -> dict:
        """The master's own view (/json): workers, active and completed applications."""
        try:
            with urllib.request.urlopen(self.webui_url + "/json", timeout=5) as resp:
                return json.load(resp)
        except (urllib.error.URLError, OSError, ValueError):
            return {}  # not listening yet

    def alive_workers(self) -> list[dict]:
        return [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]

    def log_tails(self, chars: int = 1500) -> str:
        if self.dir is None or not (self.dir / "logs").is_dir():
            return ""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
            for p in sorted((self.dir / "logs").glob("*.log"))
        )

    def stop(self) -> None:
        """Workers first (they take their executors down), then the master; KILL what TERM leaves."""
        for p in reversed(self.procs):
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # The group too: an executor or a Python worker may outlive its daemon.
            _signal_group(p, signal.SIGKILL)
            p.wait()
        self.procs = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # the group id is the daemon's pid (setsid before exec)
    except (ProcessLookupError, PermissionError):
        pass
