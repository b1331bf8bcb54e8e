-- Rate limits shared by every broker process (issue 14). One row per limited key (an
-- action, a policy and an owner, or a client address's failed authentications) holding its
-- GCRA "theoretical arrival time": the moment the key's allowance is whole again. A row whose
-- tat has passed means the same as no row, so the reconciler deletes those in batches.
-- Concurrent requests of one process are taken in one statement (a batch).
-- UNLOGGED: the counters need not survive a crash (they restart empty, which only forgives),
-- and writing them costs no WAL, so the statement's commit waits for no disk flush.
-- fillfactor 50 leaves room on each page for the next version of a row: updating tat (no
-- index on it) stays a HOT update.
-- migrate:up
CREATE UNLOGGED TABLE rate_limits (
    key text NOT NULL,
    tat timestamptz NOT NULL,
    -- How many actions the last take took (0..asked): carried out of the upsert.
    last_taken integer NOT NULL,
    CONSTRAINT rate_limits_pkey PRIMARY KEY (key)
) WITH (fillfactor = 50);

-- migrate:down
DROP TABLE rate_limits;
