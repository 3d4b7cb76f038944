SELECT id, source, reason, detail, symbol, interval, open_time, run_id, quarantined_at FROM ops.quarantine
