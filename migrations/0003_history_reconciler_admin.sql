-- State history of each upload, reconciler runs, and indexes for the operators' listings.
-- migrate:up
CREATE TABLE upload_history (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upload_id uuid        NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    status    text        NOT NULL,
    actor     text        NOT NULL,
    detail    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upload_history_upload_idx ON upload_history (upload_id, id);

CREATE TABLE reconciler_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    dry_run     boolean     NOT NULL,
    trigger     text        NOT NULL,
    counts      jsonb       NOT NULL
);
CREATE INDEX reconciler_runs_started_idx ON reconciler_runs (started_at DESC);

-- Operators' listing: any filter, newest (or oldest) first, or by size.
CREATE INDEX uploads_created_idx ON uploads (created_at DESC, id DESC);
CREATE INDEX uploads_status_created_idx ON uploads (status, created_at DESC, id DESC);
CREATE INDEX uploads_size_idx ON uploads (size DESC, id DESC);
CREATE INDEX uploads_policy_created_idx ON uploads (policy, created_at DESC, id DESC);
-- Finalizations per hour in the stats.
CREATE INDEX uploads_finalized_at_idx ON uploads (finalized_at) WHERE finalized_at IS NOT NULL;
-- The reconciler's orphan sweep looks up multipart uploads by storage's id.
CREATE INDEX uploads_multipart_upload_idx ON uploads (multipart_upload_id)
    WHERE multipart_upload_id IS NOT NULL;

-- migrate:down
DROP INDEX uploads_multipart_upload_idx;
DROP INDEX uploads_finalized_at_idx;
DROP INDEX uploads_policy_created_idx;
DROP INDEX uploads_size_idx;
DROP INDEX uploads_status_created_idx;
DROP INDEX uploads_created_idx;
DROP TABLE reconciler_runs;
DROP TABLE upload_history;
