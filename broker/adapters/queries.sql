-- Every runtime SQL statement of the broker, as named blocks loaded by broker/adapters/db.py.
-- Each state change is one statement whose WHERE clause holds its guard, so a repeat or a
-- race changes nothing and returns no row.

-- name: ping
-- Readiness: the database answers.
SELECT 1;

-- name: insert_upload
-- Create a pending upload; its deadline is counted from the database clock. A repeated
-- idempotency key inserts nothing (and returns no row).
WITH created AS (
    INSERT INTO uploads (id, owner, filename, content_type, size, sha256, metadata, bucket,
                         object_key, expires_at, policy, transfer, multipart_upload_id,
                         part_size, part_count, checksum_algorithm, idempotency_key, request_hash,
                         size_limit)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, now() + make_interval(secs => $10), $11,
            $12, $13, $14, $15, $16, $17, $18, $19)
    ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor)
    SELECT id, status, 'owner' FROM created
)
SELECT * FROM created;

-- name: lock_owner_quota
-- Serialize quota checks of one owner until the transaction ends; run before
-- insert_upload_within_quota in the same transaction, so its snapshot sees every earlier create.
SELECT pg_advisory_xact_lock(hashtextextended('broker.quota:' || $1, 0));

-- name: insert_upload_within_quota
-- insert_upload, only if the owner's live (pending + finalized) uploads stay within the
-- policy's quota ($20 bytes, $21 count) and the global one ($22 bytes, $23 count); NULL = none.
-- An upload of unknown size reserves its size limit until it is finalized.
WITH live AS (
    SELECT count(*) FILTER (WHERE policy = $11) AS policy_count,
           coalesce(sum(coalesce(size, size_limit)) FILTER (WHERE policy = $11), 0)
               AS policy_bytes,
           count(*) AS total_count,
           coalesce(sum(coalesce(size, size_limit)), 0) AS total_bytes
    FROM uploads
    WHERE owner = $2 AND status IN ('pending', 'finalized')
), created AS (
    INSERT INTO uploads (id, owner, filename, content_type, size, sha256, metadata, bucket,
                         object_key, expires_at, policy, transfer, multipart_upload_id,
                         part_size, part_count, checksum_algorithm, idempotency_key, request_hash,
                         size_limit)
    SELECT $1, $2, $3, $4, $5::bigint, $6, $7::jsonb, $8, $9,
           now() + make_interval(secs => $10), $11, $12, $13, $14, $15, $16, $17, $18,
           $19::bigint
    FROM live
    WHERE ($20::bigint IS NULL
           OR live.policy_bytes + coalesce($5::bigint, $19::bigint) <= $20)
      AND ($21::bigint IS NULL OR live.policy_count < $21)
      AND ($22::bigint IS NULL
           OR live.total_bytes + coalesce($5::bigint, $19::bigint) <= $22)
      AND ($23::bigint IS NULL OR live.total_count < $23)
    ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor)
    SELECT id, status, 'owner' FROM created
)
SELECT * FROM created;

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
-- pending -> finalized, recording what storage reported (etag, checksum, and the size of an
-- upload whose size was unknown until now: $6).
WITH changed AS (
    UPDATE uploads
    SET status = 'finalized', etag = $2, checksum = $3, size = coalesce(size, $6::bigint),
        finalized_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'pending'
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, $4, $5::jsonb FROM changed
)
SELECT * FROM changed;

-- name: mark_upload_rejected
-- pending -> rejected, with a machine-readable reason.
WITH changed AS (
    UPDATE uploads
    SET status = 'rejected', reject_reason = $2, rejected_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'pending'
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, $3, $4::jsonb FROM changed
)
SELECT * FROM changed;

-- name: mark_upload_deleted
-- pending | finalized -> deleted, asked for by the owner.
WITH changed AS (
    UPDATE uploads
    SET status = 'deleted', deleted_at = now(), updated_at = now()
    WHERE id = $1 AND owner = $2 AND status IN ('pending', 'finalized')
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor)
    SELECT id, status, 'owner' FROM changed
)
SELECT * FROM changed;

-- name: mark_upload_deleted_by_key
-- pending | finalized -> deleted, because storage reported the object removed.
WITH changed AS (
    UPDATE uploads
    SET status = 'deleted', deleted_at = now(), updated_at = now()
    WHERE bucket = $1 AND object_key = $2 AND status IN ('pending', 'finalized')
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, $3, $4::jsonb FROM changed
)
SELECT * FROM changed;

-- name: mark_upload_expired
-- pending -> expired: once its deadline has passed, or at once when $2 (an operator) says so.
WITH changed AS (
    UPDATE uploads
    SET status = 'expired', expired_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'pending' AND ($2 OR expires_at <= now())
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, $3, $4::jsonb FROM changed
)
SELECT * FROM changed;

-- name: claim_stale_pending_upload
-- One pending upload past its deadline, locked for this transaction; rows another
-- reconciler holds are skipped, so concurrent passes never handle the same upload.
SELECT * FROM uploads
WHERE status = 'pending' AND expires_at <= now()
ORDER BY expires_at
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: list_stale_pending_uploads
-- Pending uploads past their deadline, oldest deadline first (a dry run's preview; no locks).
SELECT * FROM uploads
WHERE status = 'pending' AND expires_at <= now()
ORDER BY expires_at
LIMIT $1;

-- name: claim_pending_upload
-- A pending upload an operator asked to check now, locked for this transaction.
SELECT * FROM uploads WHERE id = $1 AND status = 'pending' FOR UPDATE;

-- name: find_live_object_keys
-- Which of these keys belong to a pending or finalized upload (the rest are orphans).
SELECT object_key FROM uploads
WHERE bucket = $1 AND object_key = ANY($2::text[]) AND status IN ('pending', 'finalized');

-- name: find_pending_multipart_ids
-- Which of these storage multipart upload ids belong to a pending upload.
SELECT multipart_upload_id FROM uploads
WHERE multipart_upload_id = ANY($1::text[]) AND status = 'pending';

-- name: try_lock_orphan_sweep
-- Only one process sweeps the bucket at a time; released by unlock_orphan_sweep.
SELECT pg_try_advisory_lock(hashtextextended('broker.orphan_sweep', 0)) AS locked;

-- name: unlock_orphan_sweep
SELECT pg_advisory_unlock(hashtextextended('broker.orphan_sweep', 0));

-- name: insert_reconciler_run
-- What one reconciler pass did, counted by outcome.
INSERT INTO reconciler_runs (started_at, dry_run, trigger, counts)
VALUES ($1, $2, $3, $4::jsonb)
RETURNING *;

-- name: recent_reconciler_runs
SELECT * FROM reconciler_runs ORDER BY started_at DESC LIMIT $1;

-- name: use_custom_plans
-- For the operators' listing: plan each call with its actual filters, so that an unused
-- `$n IS NULL OR ...` filter folds away and the matching index is used. The default
-- random_page_cost (4, spinning disks) makes the planner prefer walking the newest-first
-- index past thousands of non-matching recent rows over the filter's own composite index;
-- on SSDs 1.1 is the usual setting, and it picks the composite index.
SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL random_page_cost = 1.1;

-- name: admin_list_uploads
-- Operators' listing with optional filters and keyset pagination. {after} and {order} come
-- from the fixed table admin.SORTS (ORDER BY cannot take parameters); values are all $n.
SELECT * FROM uploads
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR owner = $2)
  AND ($3::text IS NULL OR policy = $3)
  AND ($4::text IS NULL OR content_type = $4)
  AND ($5::timestamptz IS NULL OR created_at < $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::float8 IS NULL
       OR (status = 'pending' AND created_at < now() - make_interval(secs => $7)))
  AND {after}
ORDER BY {order}
LIMIT $10;

-- name: get_upload
-- One upload, whoever owns it (operators only).
SELECT * FROM uploads WHERE id = $1;

-- name: get_upload_history
-- Every state an upload went through, oldest first, with who moved it and why.
SELECT status, actor, detail, at FROM upload_history WHERE upload_id = $1 ORDER BY id;

-- name: stats_by_status_and_policy
SELECT status, policy, count(*) AS uploads, coalesce(sum(size), 0)::bigint AS bytes
FROM uploads
GROUP BY status, policy
ORDER BY status, policy;

-- name: stats_pending
-- How many uploads are pending, since when, and how many are past their deadline (stuck).
SELECT count(*) AS pending,
       min(created_at) AS oldest_created_at,
       count(*) FILTER (WHERE expires_at <= now()) AS stuck
FROM uploads
WHERE status = 'pending';

-- name: stats_hourly
-- Uploads created and finalized in each of the last 24 hours (UTC), oldest hour first.
SELECT hours.hour,
       (SELECT count(*) FROM uploads
        WHERE created_at >= hours.hour AND created_at < hours.hour + interval '1 hour')
           AS created,
       (SELECT count(*) FROM uploads
        WHERE finalized_at >= hours.hour AND finalized_at < hours.hour + interval '1 hour')
           AS finalized
FROM generate_series(date_trunc('hour', now()) - interval '23 hours',
                     date_trunc('hour', now()), interval '1 hour') AS hours (hour)
ORDER BY hours.hour;

-- name: get_upload_events_after
-- The state changes of one upload after a given event id (its SSE stream), oldest first.
SELECT id, status, at FROM upload_history WHERE upload_id = $1 AND id > $2 ORDER BY id;
