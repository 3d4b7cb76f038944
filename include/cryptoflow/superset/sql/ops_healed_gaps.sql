SELECT symbol, interval, open_time, run_id, healed_at FROM ops.healed_gaps
