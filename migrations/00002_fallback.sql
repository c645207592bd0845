-- +goose Up
-- A job whose kind gives up on it may fall back to another kind: the replaced job's key row
-- names its successor (fallback_to), and the successor's names the job it replaces
-- (fallback_of), so both statuses link each other.
ALTER TABLE keys ADD COLUMN fallback_of text, ADD COLUMN fallback_to text;

-- +goose Down
ALTER TABLE keys DROP COLUMN fallback_of, DROP COLUMN fallback_to;
