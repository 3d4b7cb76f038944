WITH RECURSIVE pipelines AS (
    (SELECT pipeline FROM ops.pipeline_runs ORDER BY pipeline LIMIT 1)
    UNION ALL
    SELECT (SELECT r.pipeline FROM ops.pipeline_runs r WHERE r.pipeline > pipelines.pipeline
            ORDER BY r.pipeline LIMIT 1)
    FROM pipelines WHERE pipelines.pipeline IS NOT NULL
)
SELECT runs.pipeline, runs.task, runs.run_id, runs.status, runs.started_at, runs.finished_at,
       extract(epoch FROM runs.finished_at - runs.started_at)::float8 AS seconds,
       runs.rows_in, runs.rows_out, runs.rows_quarantined
FROM pipelines
CROSS JOIN LATERAL (SELECT * FROM ops.pipeline_runs r WHERE r.pipeline = pipelines.pipeline
                    ORDER BY r.started_at DESC LIMIT 5) runs
WHERE pipelines.pipeline IS NOT NULL
