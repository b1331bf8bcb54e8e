-- The upload records: one row per upload, its state and what storage reported.
-- migrate:up
CREATE TABLE uploads (
    id            uuid        PRIMARY KEY,
    owner         text        NOT NULL,
    status        text        NOT NULL DEFAULT 'pending',
    filename      text        NOT NULL,
    content_type  text        NOT NULL,
    size          bigint      NOT NULL,
    sha256        text,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    bucket        text        NOT NULL,
    object_key    text        NOT NULL,
    etag          text,
    reject_reason text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    finalized_at  timestamptz,
    rejected_at   timestamptz,
    expired_at    timestamptz,
    deleted_at    timestamptz,
    CONSTRAINT uploads_status_check
        CHECK (status IN ('pending', 'finalized', 'rejected', 'expired', 'deleted')),
    CONSTRAINT uploads_size_check CHECK (size > 0),
    CONSTRAINT uploads_sha256_check CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT uploads_object_key_unique UNIQUE (bucket, object_key)
);

-- The owner's listing: newest first, keyset-paginated on (created_at, id).
CREATE INDEX uploads_owner_created_idx ON uploads (owner, created_at DESC, id DESC);
-- Finding pending uploads past their deadline.
CREATE INDEX uploads_pending_expires_idx ON uploads (expires_at) WHERE status = 'pending';

-- migrate:down
DROP TABLE uploads;
