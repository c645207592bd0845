-- +goose Up

-- keys is the idempotency ledger: one row per (kind, key), owned by the job that last claimed it.
-- Every state write after a claim carries "AND fence = $fence", so a worker that lost its lease
-- (a zombie) updates nothing.
CREATE TABLE keys (
    kind            text        NOT NULL,
    key             text        NOT NULL,
    job_id          text        NOT NULL,
    payload_hash    bytea       NOT NULL,
    state           text        NOT NULL CHECK (state IN ('running', 'retrying', 'succeeded', 'dead')),
    fence           bigint      NOT NULL DEFAULT 1,
    attempts        integer     NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    next_attempt_at timestamptz,
    result          jsonb,
    reason          text,
    last_error      text,
    enqueued_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    first_failed_at timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);

CREATE INDEX keys_job_id_idx ON keys (job_id);
CREATE INDEX keys_finished_at_idx ON keys (finished_at) WHERE finished_at IS NOT NULL;

-- job_records holds the jobs that finished without owning their key: duplicates of a key another
-- job already finished, jobs whose key was reused with a different payload, and malformed
-- messages. Status by id reads keys first, then this table, then the stream.
CREATE TABLE job_records (
    id           text        PRIMARY KEY,
    kind         text        NOT NULL,
    key          text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('succeeded', 'dead')),
    reason       text,
    last_error   text,
    duplicate_of text,
    enqueued_at  timestamptz,
    finished_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_records_finished_at_idx ON job_records (finished_at);

-- +goose Down
DROP TABLE job_records;
DROP TABLE keys;
