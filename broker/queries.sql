-- Every runtime SQL statement of the broker, as named blocks loaded by broker/db.py.
-- Each state change is one statement whose WHERE clause holds its guard, so a repeat or a
-- race changes nothing and returns no row.

-- name: ping
-- Readiness: the database answers.
SELECT 1;

-- name: insert_upload
-- Create a pending upload; its deadline is counted from the database clock.
INSERT INTO uploads (id, owner, filename, content_type, size, sha256, metadata, bucket,
                     object_key, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, now() + make_interval(secs => $10))
RETURNING *;

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
-- pending -> finalized, recording what storage reported.
UPDATE uploads
SET status = 'finalized', etag = $2, finalized_at = now(), updated_at = now()
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
