"""spark_jobs/etl_candles.py, SIGKILLed right after its first merge, inside the load transaction,
once its lake partitions are written aside (not published).

The kill-safety test (test_spark_etl.py) runs this instead of the job itself: the fault lives
here, beside the test, and the production job carries no switch for it.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

from cryptoflow.etl import job

ETL = str(Path(__file__).resolve().parents[2] / "spark_jobs" / "etl_candles.py")
_merge = (
    job._Run._merge
)  # the candle merge, whichever way it goes (merge_staged or the fresh insert)


def _merge_then_die(self, *args, **kwargs):
    result = _merge(self, *args, **kwargs)
    if self._lake_thread is not None:
        self._lake_thread.join()  # the lake written aside meanwhile: the kill leaves it unpublished
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind: the transaction is left open
    return result


job._Run._merge = _merge_then_die
sys.argv = [ETL, *sys.argv[1:]]
runpy.run_path(ETL, run_name="__main__")
