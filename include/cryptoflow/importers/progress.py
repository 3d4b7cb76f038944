"""Progress of a long import on stderr, so that stdout stays one parseable line per file."""

from __future__ import annotations

import sys
from typing import TextIO

LINE_EVERY = 50_000  # rows between progress lines when stderr is not a terminal (logs stay short)


class StderrProgress:
    """An importer's `progress(stage, done, total)` callback: a bar redrawn in place on a terminal,
    a line every LINE_EVERY rows otherwise. `done()` ends the bar's line."""

    def __init__(self, name: str, stream: TextIO | None = None):
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.drawn = False
        self.stage, self.last = "", 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.tty:
            width = 30
            filled = width * done // max(total, 1)
            self.stream.write(
                f"\r{self.name}: {stage:8} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows"
            )
            self.drawn = True
        elif stage == self.stage and done // LINE_EVERY > self.last // LINE_EVERY:
            self.stream.write(f"{self.name}: {stage} {done}/{total} rows\n")
        self.stage, self.last = stage, done
        self.stream.flush()

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
