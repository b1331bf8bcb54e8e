-- Upload policies, multipart transfers, stored checksums and idempotent creation.
-- migrate:up
ALTER TABLE uploads
    ADD COLUMN policy              text    NOT NULL DEFAULT 'default',
    ADD COLUMN transfer            text    NOT NULL DEFAULT 'put',
    ADD COLUMN multipart_upload_id text,
    ADD COLUMN part_size           bigint,
    ADD COLUMN part_count          integer,
    ADD COLUMN checksum_algorithm  text,
    ADD COLUMN checksum            text,
    ADD COLUMN idempotency_key     text,
    ADD COLUMN request_hash        text,
    ADD CONSTRAINT uploads_transfer_check CHECK (transfer IN ('put', 'post', 'multipart')),
    ADD CONSTRAINT uploads_checksum_algorithm_check
        CHECK (checksum_algorithm IN ('SHA256', 'CRC32C')),
    ADD CONSTRAINT uploads_multipart_check CHECK (
        (transfer = 'multipart') = (multipart_upload_id IS NOT NULL
                                    AND part_size IS NOT NULL AND part_count IS NOT NULL)
    );

-- A retried create with the same key finds the upload it made the first time.
CREATE UNIQUE INDEX uploads_owner_idempotency_key_idx
    ON uploads (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Quota checks sum the live (pending + finalized) uploads of one owner.
CREATE INDEX uploads_owner_live_idx
    ON uploads (owner, policy) INCLUDE (size) WHERE status IN ('pending', 'finalized');

-- migrate:down
DROP INDEX uploads_owner_live_idx;
DROP INDEX uploads_owner_idempotency_key_idx;
ALTER TABLE uploads
    DROP CONSTRAINT uploads_multipart_check,
    DROP CONSTRAINT uploads_checksum_algorithm_check,
    DROP CONSTRAINT uploads_transfer_check,
    DROP COLUMN request_hash,
    DROP COLUMN idempotency_key,
    DROP COLUMN checksum,
    DROP COLUMN checksum_algorithm,
    DROP COLUMN part_count,
    DROP COLUMN part_size,
    DROP COLUMN multipart_upload_id,
    DROP COLUMN transfer,
    DROP COLUMN policy;
