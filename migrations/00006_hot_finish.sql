-- +goose NO TRANSACTION
-- +goose Up

-- A finish is a HOT update: it writes no indexed column (the index on finished_at was the one
-- it did write), and keys' pages keep room for the new row version. Fillfactor 50: a group
-- commit finishes together keys that were claimed together, so most rows of a page may need
-- their second version at once, before the first ones can be pruned. Pages written before
-- this migration fill up as before. A HOT update adds no index entries; a finish used to add
-- one to each of the table's four indexes. The reaper finds old keys through the listing
-- index instead (a key finishes after it is enqueued).
-- CONCURRENTLY: workers keep writing while the index goes (or, going down, is built again).
DROP INDEX CONCURRENTLY IF EXISTS keys_finished_at_idx;
ALTER TABLE keys SET (fillfactor = 50);

-- +goose Down
ALTER TABLE keys RESET (fillfactor);
CREATE INDEX CONCURRENTLY IF NOT EXISTS keys_finished_at_idx ON keys (finished_at) WHERE finished_at IS NOT NULL;
