"""Importers of historical candle files: each returns an ImportResult accounting for every row.

- `cryptodatadownload.import_cdd_csv`: CryptoDataDownload CSVs (URL line, header, newest first).
- `binance_vision.import_binance_vision`: data.binance.vision kline dumps (CSV or ZIP, 12 columns).

Invariant, asserted by the tests on every shared file:
    counts["read"] == counts["loaded"] + counts["quarantined"] + counts["duplicates_collapsed"]
"""

from cryptoflow.importers.common import ImportResult
from cryptoflow.importers.cryptodatadownload import import_cdd_csv
from cryptoflow.importers.binance_vision import import_binance_vision

__all__ = ["ImportResult", "import_cdd_csv", "import_binance_vision"]
