"""Importers of historical candle files: each returns an ImportResult accounting for every row.

- `cryptodatadownload.import_cdd_csv`: CryptoDataDownload CSVs (URL line, header, newest first).
Binance's own archive (data.binance.vision kline dumps) is read by its source:
`cryptoflow.sources.binance.archive.import_binance_vision`, on the same rules.
- `layout`: what a file's content says about itself (dates, unix precision, date order, interval,
  symbol): the rules both importers apply, in one place.
- `land`: results into the landing zone.

A file that can't be read safely as a whole (no symbol, no interval, date order ambiguous,
checksum mismatch) raises ImportRefused (a ValueError) with a one-line reason; nothing is loaded.

Invariant, asserted by the tests on every shared file:
    counts["read"] == counts["loaded"] + counts["quarantined"] + counts["duplicates_collapsed"]
"""

from cryptoflow.importers.common import ImportRefused, ImportResult
from cryptoflow.importers.cryptodatadownload import import_cdd_csv

__all__ = ["ImportRefused", "ImportResult", "import_cdd_csv"]
