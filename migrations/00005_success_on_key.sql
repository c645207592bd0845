-- +goose Up

-- A success's attempt is its key's row, not a row of attempts: the key already holds its
-- number (attempts), fence, started_at and finished_at, and now the worker that ran it. The
-- attempts table keeps the attempts that did not succeed (failed, timed out, released,
-- replayed), which is what a job's history needs beside its key; a success costs one write
-- fewer (a heap row and two index entries). Readers put the two together
-- (idempotency.Ledger.Attempts, Aggregate); success rows written before this migration are
-- read from the key instead.
ALTER TABLE keys ADD COLUMN worker text;

-- +goose Down
-- The successes go back to the attempts table, where the code before this migration reads them.
INSERT INTO attempts (job_id, fence, kind, n, started_at, finished_at, outcome, error, worker)
SELECT job_id, fence, kind, attempts, COALESCE(started_at, finished_at), finished_at, 'succeeded', NULL, worker
FROM keys WHERE state = 'succeeded' AND finished_at IS NOT NULL
ON CONFLICT DO NOTHING;
ALTER TABLE keys DROP COLUMN worker;
