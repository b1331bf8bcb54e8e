-- Every runtime SQL statement of the broker, as named blocks loaded by broker/db.py.
-- Each state change is one statement whose WHERE clause holds its guard, so a repeat or a
-- race changes nothing and returns no row.

-- name: ping
-- Readiness: the database answers.
SELECT 1;

-- name: insert_upload
-- Create a pending upload; its deadline is counted from the database clock. A repeated
-- idempotency key inserts nothing (and returns no row).
INSERT INTO uploads (id, owner, filename, content_type, size, sha256, metadata, bucket,
                     object_key, expires_at, policy, transfer, multipart_upload_id, part_size,
                     part_count, checksum_algorithm, idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, now() + make_interval(secs => $10), $11,
        $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: lock_owner_quota
-- Serialize quota checks of one owner until the transaction ends; run before
-- insert_upload_within_quota in the same transaction, so its snapshot sees every earlier create.
SELECT pg_advisory_xact_lock(hashtextextended('broker.quota:' || $1, 0));

-- name: insert_upload_within_quota
-- insert_upload, only if the owner's live (pending + finalized) uploads stay within the
-- policy's quota ($19 bytes, $20 count) and the global one ($21 bytes, $22 count); NULL = none.
WITH live AS (
    SELECT count(*) FILTER (WHERE policy = $11) AS policy_count,
           coalesce(sum(size) FILTER (WHERE policy = $11), 0) AS policy_bytes,
           count(*) AS total_count,
           coalesce(sum(size), 0) AS total_bytes
    FROM uploads
    WHERE owner = $2 AND status IN ('pending', 'finalized')
)
INSERT INTO uploads (id, owner, filename, content_type, size, sha256, metadata, bucket,
                     object_key, expires_at, policy, transfer, multipart_upload_id, part_size,
                     part_count, checksum_algorithm, idempotency_key, request_hash)
SELECT $1, $2, $3, $4, $5::bigint, $6, $7::jsonb, $8, $9, now() + make_interval(secs => $10),
       $11, $12, $13, $14, $15, $16, $17, $18
FROM live
WHERE ($19::bigint IS NULL OR live.policy_bytes + $5::bigint <= $19)
  AND ($20::bigint IS NULL OR live.policy_count < $20)
  AND ($21::bigint IS NULL OR live.total_bytes + $5::bigint <= $21)
  AND ($22::bigint IS NULL OR live.total_count < $22)
ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: get_upload_by_idempotency_key
-- The upload a retried create made the first time.
SELECT * FROM uploads WHERE owner = $1 AND idempotency_key = $2;

-- name: get_upload_for_owner
-- One upload, only if the caller owns it.
SELECT * FROM uploads WHERE id = $1 AND owner = $2;

-- name: get_upload_by_key
-- The upload a storage event is about.
SELECT * FROM uploads WHERE bucket = $1 AND object_key = $2;

-- name: list_uploads_for_owner
-- The caller's uploads, newest first, after the keyset cursor ($3, $4) when given.
SELECT * FROM uploads
WHERE owner = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5;

-- name: mark_upload_finalized
-- pending -> finalized, recording what storage reported (etag, checksum).
UPDATE uploads
SET status = 'finalized', etag = $2, checksum = $3, finalized_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING *;

-- name: mark_upload_rejected
-- pending -> rejected, with a machine-readable reason.
UPDATE uploads
SET status = 'rejected', reject_reason = $2, rejected_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING *;

-- name: mark_upload_deleted
-- pending | finalized -> deleted, asked for by the owner.
UPDATE uploads
SET status = 'deleted', deleted_at = now(), updated_at = now()
WHERE id = $1 AND owner = $2 AND status IN ('pending', 'finalized')
RETURNING *;

-- name: mark_upload_deleted_by_key
-- pending | finalized -> deleted, because storage reported the object removed.
UPDATE uploads
SET status = 'deleted', deleted_at = now(), updated_at = now()
WHERE bucket = $1 AND object_key = $2 AND status IN ('pending', 'finalized')
RETURNING *;
