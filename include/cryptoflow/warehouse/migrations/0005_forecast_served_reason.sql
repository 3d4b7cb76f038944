-- Why each prediction was served by what it names in model_version: "promoted model <v>", or
-- "persistence: no promoted model" / "...stale..." when no model earned its place. Stored with the
-- row so a dashboard (or anyone auditing a forecast) sees the reason beside the number.
ALTER TABLE forecast.predictions ADD COLUMN served_reason text;
COMMENT ON COLUMN forecast.predictions.served_reason IS
    'why model_version served this hour (promoted model, or persistence and the reason no model was served)';
