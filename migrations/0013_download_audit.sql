-- Download audit (issue 14): one row for every presigned GET the broker issues, written by
-- the same statement that reads the upload for the download (queries.sql:
-- get_upload_recording_download), so no URL leaves the broker unrecorded. No foreign key to
-- uploads: the audit is a log that outlives what it describes, and the insert stays one
-- index write cheaper. Rows older than BROKER_DOWNLOAD_AUDIT_RETENTION_DAYS are deleted in
-- batches by the reconciler (delete_expired_download_audit).
-- migrate:up
CREATE TABLE download_audit (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upload_id          uuid        NOT NULL,
    requester          text        NOT NULL,  -- the owner the bearer token speaks for
    issued_at          timestamptz NOT NULL DEFAULT now(),
    expires_in_seconds integer     NOT NULL,  -- the URL's lifetime from issued_at
    request_id         text,                  -- X-Request-ID of the request that asked
    client_address     text,                  -- the peer address the broker saw
    CONSTRAINT download_audit_expires_in_seconds_check CHECK (expires_in_seconds > 0)
);
-- An upload's downloads, newest first (the admin route and the upload's admin view).
CREATE INDEX download_audit_upload_id_idx ON download_audit (upload_id, issued_at DESC, id DESC);
-- Everything since a time (broker audit downloads --since), and the retention's deletes.
CREATE INDEX download_audit_issued_at_idx ON download_audit (issued_at, id);

-- migrate:down
DROP TABLE download_audit;
