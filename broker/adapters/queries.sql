-- Every runtime SQL statement of the broker, as named blocks loaded by broker/adapters/db.py.
-- Parameters are named (:owner); the loader turns them into asyncpg's $n.
-- Each state change is one statement whose WHERE clause holds its guard, so a repeat or a
-- race changes nothing and returns no row. Statements that return uploads list the columns
-- of broker.domain.model.Upload in its field order (tests/migration checks it).

-- name: ping
-- Readiness: the database answers.
SELECT 1;

-- name: claim_issuer_namespace
-- Claim an identity provider's owner namespace ("auth0:") the first time a broker starts with
-- it, unless an owner already has that form (a local owner, then: returned, nothing claimed).
-- The scan runs once per provider, not once per start.
WITH claimed_before AS (
    SELECT 1 FROM issuer_namespaces WHERE name = :issuer
), taken AS (
    SELECT owner FROM uploads
    WHERE starts_with(owner, :prefix) AND NOT EXISTS (SELECT 1 FROM claimed_before)
    LIMIT 1
), claimed AS (
    INSERT INTO issuer_namespaces (name)
    SELECT :issuer WHERE NOT EXISTS (SELECT 1 FROM taken)
    ON CONFLICT (name) DO NOTHING
)
SELECT owner FROM taken;

-- name: insert_upload
-- Create a pending upload; its deadline and its early check (check_after: when its URL has
-- expired; NULL for none) are counted from the database clock. A repeated idempotency key
-- inserts nothing (and returns no row).
WITH created AS (
    INSERT INTO uploads (id, owner, filename, content_type, size, size_limit, sha256, metadata,
                         bucket, object_key, policy, transfer, multipart_upload_id, part_size,
                         part_count, checksum_algorithm, idempotency_key, request_hash,
                         expires_at, check_after)
    VALUES (:id, :owner, :filename, :content_type, :size, :size_limit, :sha256, :metadata::jsonb,
            :bucket, :object_key, :policy, :transfer, :multipart_upload_id, :part_size,
            :part_count, :checksum_algorithm, :idempotency_key, :request_hash,
            now() + make_interval(secs => :pending_seconds),
            now() + make_interval(secs => :check_after_seconds::float8))
    ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor)
    SELECT id, status, 'owner' FROM created
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM created;

-- name: lock_owner_quota
-- Serialize quota checks of one owner until the transaction ends; run before
-- insert_upload_within_quota in the same transaction, so its snapshot sees every earlier create.
SELECT pg_advisory_xact_lock(hashtextextended('broker.quota:' || :owner, 0));

-- name: insert_upload_within_quota
-- insert_upload, only if the owner's live (pending, scanning, finalized, quarantined) uploads
-- stay within the
-- policy's quota and the global one (NULL = no limit). An upload of unknown size reserves
-- its size limit until it is finalized.
WITH live AS (
    SELECT count(*) FILTER (WHERE policy = :policy) AS policy_count,
           coalesce(sum(coalesce(size, size_limit)) FILTER (WHERE policy = :policy), 0)
               AS policy_bytes,
           count(*) AS total_count,
           coalesce(sum(coalesce(size, size_limit)), 0) AS total_bytes
    FROM uploads
    WHERE owner = :owner AND status IN ('pending', 'scanning', 'finalized', 'quarantined')
), created AS (
    INSERT INTO uploads (id, owner, filename, content_type, size, size_limit, sha256, metadata,
                         bucket, object_key, policy, transfer, multipart_upload_id, part_size,
                         part_count, checksum_algorithm, idempotency_key, request_hash,
                         expires_at, check_after)
    SELECT :id, :owner, :filename, :content_type, :size::bigint, :size_limit::bigint, :sha256,
           :metadata::jsonb, :bucket, :object_key, :policy, :transfer, :multipart_upload_id,
           :part_size, :part_count, :checksum_algorithm, :idempotency_key, :request_hash,
           now() + make_interval(secs => :pending_seconds),
           now() + make_interval(secs => :check_after_seconds::float8)
    FROM live
    WHERE (:policy_bytes::bigint IS NULL
           OR live.policy_bytes + coalesce(:size::bigint, :size_limit::bigint) <= :policy_bytes)
      AND (:policy_count::bigint IS NULL OR live.policy_count < :policy_count)
      AND (:global_bytes::bigint IS NULL
           OR live.total_bytes + coalesce(:size::bigint, :size_limit::bigint) <= :global_bytes)
      AND (:global_count::bigint IS NULL OR live.total_count < :global_count)
    ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor)
    SELECT id, status, 'owner' FROM created
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM created;

-- name: get_upload_by_idempotency_key
-- The upload a retried create made the first time.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads WHERE owner = :owner AND idempotency_key = :idempotency_key;

-- name: get_upload_for_owner
-- One upload, only if the caller owns it.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads WHERE id = :id AND owner = :owner;

-- name: get_upload
-- One upload, whoever owns it.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads WHERE id = :id;

-- name: get_upload_owner
-- Who owns an upload (to check a token scoped to it).
SELECT owner FROM uploads WHERE id = :id;

-- name: get_upload_by_key
-- The upload a storage event is about.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads WHERE bucket = :bucket AND object_key = :object_key;

-- name: list_uploads_for_owner
-- The caller's uploads, newest first, after the keyset cursor when given.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads
WHERE owner = :owner
  AND (:status::text IS NULL OR status = :status)
  AND (:after_created_at::timestamptz IS NULL
       OR (created_at, id) < (:after_created_at, :after_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_uploads_for_owner_by_metadata
-- list_uploads_for_owner, only the uploads whose metadata holds every key and value of
-- :metadata (JSONB containment, served by the GIN index uploads_metadata_idx). A statement
-- of its own: behind an `:x IS NULL OR` guard, a generic plan could not use that index.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads
WHERE owner = :owner
  AND metadata @> :metadata::jsonb
  AND (:status::text IS NULL OR status = :status)
  AND (:after_created_at::timestamptz IS NULL
       OR (created_at, id) < (:after_created_at, :after_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: mark_upload_finalized
-- pending -> finalized, recording what storage reported (etag, checksum, and the size of an
-- upload whose size was unknown until now) and the type detected in the bytes.
WITH changed AS (
    UPDATE uploads
    SET status = 'finalized', etag = :etag, checksum = :checksum,
        size = coalesce(size, :size::bigint), detected_content_type = :detected_content_type,
        finalized_at = now(), updated_at = now()
    WHERE id = :id AND status = 'pending'
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: mark_upload_rejected
-- pending -> rejected, with a machine-readable reason.
WITH changed AS (
    UPDATE uploads
    SET status = 'rejected', reject_reason = :reason,
        detected_content_type = coalesce(:detected_content_type, detected_content_type),
        rejected_at = now(), updated_at = now()
    WHERE id = :id AND status = 'pending'
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: mark_upload_scanning
-- pending -> scanning: the bytes match what was promised, and the policy scans them. The scan
-- job is queued by the same statement (its insert trigger wakes the scanners).
WITH changed AS (
    UPDATE uploads
    SET status = 'scanning', etag = :etag, checksum = :checksum,
        size = coalesce(size, :size::bigint), detected_content_type = :detected_content_type,
        updated_at = now()
    WHERE id = :id AND status = 'pending'
    RETURNING *
), queued AS (
    INSERT INTO scan_jobs (upload_id) SELECT id FROM changed
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: record_part_plan
-- An upload of undeclared size learns its parts when they are joined: the size of the first
-- (every part but the last is cut to it) and how many. Not a state change: no history.
UPDATE uploads SET part_size = :part_size, part_count = :part_count, updated_at = now()
WHERE id = :id AND status = 'pending' AND size IS NULL
RETURNING id;

-- name: claim_scan_jobs
-- Lease up to :limit due scan jobs to :lease_owner and count the attempt. Jobs another
-- scanner is claiming are skipped; a lease that ran out (its scanner died) is taken over.
WITH due AS (
    SELECT upload_id FROM scan_jobs
    WHERE next_attempt_at <= :now::timestamptz
      AND (leased_until IS NULL OR leased_until <= :now)
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE scan_jobs j
SET leased_until = :now + make_interval(secs => :lease_seconds), lease_owner = :lease_owner,
    attempts = j.attempts + 1
FROM due WHERE j.upload_id = due.upload_id
RETURNING j.upload_id, j.attempts;

-- name: record_scan_verdict
-- scanning -> :status (finalized: clean, or skipped under fail-open; quarantined: infected),
-- and the job is done; only by the scanner that still holds the job's lease. The job goes
-- even if the upload left scanning meanwhile (deleted by its owner).
WITH job AS (
    DELETE FROM scan_jobs WHERE upload_id = :id AND lease_owner = :lease_owner
    RETURNING upload_id
), changed AS (
    UPDATE uploads u
    SET status = :status, scan_result = :scan_result, scan_signature = :scan_signature,
        finalized_at = CASE WHEN :status = 'finalized' THEN now() END, updated_at = now()
    FROM job
    WHERE u.id = job.upload_id AND u.status = 'scanning'
    RETURNING u.*
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: retry_scan_job
-- No verdict (the engine is down, or storage is): try again at :next_attempt_at.
UPDATE scan_jobs
SET next_attempt_at = :next_attempt_at, leased_until = NULL, lease_owner = NULL,
    last_error = :error
WHERE upload_id = :id AND lease_owner = :lease_owner
RETURNING upload_id;

-- name: release_scan_leases
-- A scanner that stops hands back the jobs it holds: due again at once.
UPDATE scan_jobs SET leased_until = NULL, lease_owner = NULL
WHERE starts_with(lease_owner, :scanner || '/');

-- name: drop_scan_job
-- The job of an upload that is no longer scanning (deleted meanwhile, object gone).
DELETE FROM scan_jobs WHERE upload_id = :id AND lease_owner = :lease_owner;

-- name: scan_backlog
-- For /metrics and /ops: jobs waiting, those waiting after an attempt gave no verdict, and
-- the oldest job's start.
SELECT count(*) AS jobs, count(*) FILTER (WHERE last_error IS NOT NULL) AS retried,
       min(created_at) AS oldest
FROM scan_jobs;

-- name: release_quarantined_upload
-- quarantined -> finalized, by an admin who says why.
WITH changed AS (
    UPDATE uploads
    SET status = 'finalized', finalized_at = now(), updated_at = now()
    WHERE id = :id AND status = 'quarantined'
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: admin_delete_upload
-- A live upload -> deleted, by an admin who says why (a quarantined file, for one).
WITH changed AS (
    UPDATE uploads
    SET status = 'deleted', deleted_at = now(), updated_at = now()
    WHERE id = :id AND status IN ('pending', 'scanning', 'finalized', 'quarantined')
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: mark_upload_deleted
-- A live upload (pending, scanning, finalized, quarantined) -> deleted, asked for by the owner.
WITH changed AS (
    UPDATE uploads
    SET status = 'deleted', deleted_at = now(), updated_at = now()
    WHERE id = :id AND owner = :owner AND status IN ('pending', 'scanning', 'finalized', 'quarantined')
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor)
    SELECT id, status, 'owner' FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: mark_upload_deleted_by_key
-- A live upload -> deleted, because storage reported the object removed.
WITH changed AS (
    UPDATE uploads
    SET status = 'deleted', deleted_at = now(), updated_at = now()
    WHERE bucket = :bucket AND object_key = :object_key
      AND status IN ('pending', 'scanning', 'finalized', 'quarantined')
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: mark_upload_expired
-- pending -> expired: once its deadline has passed, or at once when :force (an operator).
WITH changed AS (
    UPDATE uploads
    SET status = 'expired', expired_at = now(), updated_at = now()
    WHERE id = :id AND status = 'pending' AND (:force OR expires_at <= now())
    RETURNING *
), logged AS (
    INSERT INTO upload_history (upload_id, status, actor, detail)
    SELECT id, status, :actor, :detail::jsonb FROM changed
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM changed;

-- name: claim_stale_pending_upload
-- One pending upload past its deadline, locked for this transaction; rows another
-- reconciler holds are skipped, so concurrent passes never handle the same upload.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads
WHERE status = 'pending' AND expires_at <= now()
ORDER BY expires_at
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: claim_unchecked_pending_upload
-- One pending upload due for its early check (its URLs have expired; migration 0010), locked
-- for this transaction, as claim_stale_pending_upload.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads
WHERE status = 'pending' AND check_after <= now()
ORDER BY check_after
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: mark_upload_checked
-- The early check found nothing in storage: no more early checks until a new URL is signed
-- (the deadline check still follows). Not a state change: no history.
UPDATE uploads SET check_after = NULL WHERE id = :id AND status = 'pending';

-- name: schedule_upload_check
-- Check a pending upload early, :seconds from now (a part URL signed, a multipart completed).
UPDATE uploads SET check_after = now() + make_interval(secs => :seconds::float8)
WHERE id = :id AND status = 'pending';

-- name: list_stale_pending_uploads
-- Pending uploads past their deadline, oldest deadline first (a dry run's preview; no locks).
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads
WHERE status = 'pending' AND expires_at <= now()
ORDER BY expires_at
LIMIT :limit;

-- name: claim_pending_upload
-- A pending upload an operator asked to check now, locked for this transaction.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads WHERE id = :id AND status = 'pending' FOR UPDATE;

-- name: find_live_object_keys
-- Which of these keys belong to a live upload (the rest are orphans).
SELECT object_key FROM uploads
WHERE bucket = :bucket AND object_key = ANY(:object_keys::text[])
  AND status IN ('pending', 'scanning', 'finalized', 'quarantined');

-- name: find_pending_multipart_ids
-- Which of these storage multipart upload ids belong to a pending upload.
SELECT multipart_upload_id FROM uploads
WHERE multipart_upload_id = ANY(:multipart_upload_ids::text[]) AND status = 'pending';

-- name: try_lock_orphan_sweep
-- Only one process sweeps the bucket at a time; released by unlock_orphan_sweep.
SELECT pg_try_advisory_lock(hashtextextended('broker.orphan_sweep', 0));

-- name: unlock_orphan_sweep
SELECT pg_advisory_unlock(hashtextextended('broker.orphan_sweep', 0));

-- name: insert_reconciler_run
-- What one reconciler pass did, counted by outcome.
INSERT INTO reconciler_runs (started_at, dry_run, trigger, counts)
VALUES (:started_at, :dry_run, :trigger, :counts::jsonb);

-- name: recent_reconciler_runs
SELECT started_at, finished_at, dry_run, trigger, counts
FROM reconciler_runs ORDER BY started_at DESC LIMIT :limit;

-- name: use_custom_plans
-- For the operators' listing and the metadata filter: plan each call with its actual filters, so that an unused
-- `:x IS NULL OR ...` filter folds away and the matching index is used. The default
-- random_page_cost (4, spinning disks) makes the planner prefer walking the newest-first
-- index past thousands of non-matching recent rows over the filter's own composite index;
-- on SSDs 1.1 is the usual setting, and it picks the composite index.
SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL random_page_cost = 1.1;

-- name: admin_list_uploads
-- Operators' listing with optional filters and keyset pagination. {after} and {order} come
-- from the fixed table ADMIN_SORTS in db.py (ORDER BY cannot take parameters).
-- :filename_like is a LIKE pattern ('%holi%', its text's own % _ and \ escaped by the
-- adapter); pg_trgm's index uploads_filename_trgm_idx serves ILIKE with wildcards at both ends.
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM uploads
WHERE (:status::text IS NULL OR status = :status)
  AND (:owner::text IS NULL OR owner = :owner)
  AND (:policy::text IS NULL OR policy = :policy)
  AND (:content_type::text IS NULL OR content_type = :content_type)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after)
  AND (:filename_like::text IS NULL OR filename ILIKE :filename_like ESCAPE '\')
  AND (:pending_longer_than_seconds::float8 IS NULL
       OR (status = 'pending'
           AND created_at < now() - make_interval(secs => :pending_longer_than_seconds)))
  AND {after}
ORDER BY {order}
LIMIT :limit;

-- name: get_upload_history
-- Every state an upload went through, oldest first, with who moved it and why.
SELECT id, status, actor, detail, at FROM upload_history WHERE upload_id = :id ORDER BY id;

-- name: latest_history_id
-- Where the live streams' safety net starts: the newest history id now.
SELECT coalesce(max(id), 0) FROM upload_history;

-- name: uploads_changed_since
-- The live streams' safety net, once per heartbeat interval and process: the uploads with a
-- state change after :after_id (a primary-key range), and the newest id seen.
SELECT coalesce(array_agg(DISTINCT upload_id), '{}'::uuid[]), coalesce(max(id), :after_id)
FROM upload_history WHERE id > :after_id;

-- name: get_upload_history_after
-- The state changes of one upload after a given history id (its SSE stream), oldest first.
SELECT id, status, actor, detail, at FROM upload_history
WHERE upload_id = :id AND id > :after_id ORDER BY id;

-- name: stats_by_status_and_policy
SELECT status, policy, count(*) AS uploads, coalesce(sum(size), 0)::bigint AS bytes
FROM uploads
GROUP BY status, policy
ORDER BY status, policy;

-- name: stats_pending
-- How many uploads are pending, since when, and how many are past their deadline (stuck).
SELECT count(*) AS pending,
       count(*) FILTER (WHERE expires_at <= now()) AS stuck,
       min(created_at) AS oldest_created_at
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

-- ---------------------------------------------------------------- app webhooks
-- Endpoints are returned as the columns of broker.domain.webhooks.WebhookEndpoint, deliveries
-- as those of WebhookDelivery; secrets only where a sender signs with them.

-- name: insert_webhook_endpoint
INSERT INTO webhook_endpoints (id, url, description, event_types, policy, secret)
VALUES (:id, :url, :description, :event_types::text[], :policy, :secret)
RETURNING id, url, description, event_types, policy, previous_secret_expires_at, disabled_at,
    disabled_reason, throttled_until, created_at, updated_at;

-- name: list_webhook_endpoints
SELECT id, url, description, event_types, policy, previous_secret_expires_at, disabled_at,
    disabled_reason, throttled_until, created_at, updated_at
FROM webhook_endpoints ORDER BY created_at, id;

-- name: get_webhook_endpoint
SELECT id, url, description, event_types, policy, previous_secret_expires_at, disabled_at,
    disabled_reason, throttled_until, created_at, updated_at
FROM webhook_endpoints WHERE id = :id;

-- name: update_webhook_endpoint
-- Replace what an operator may change (the flow merges the change into the current values).
UPDATE webhook_endpoints
SET url = :url, description = :description, event_types = :event_types::text[],
    policy = :policy, updated_at = now()
WHERE id = :id
RETURNING id, url, description, event_types, policy, previous_secret_expires_at, disabled_at,
    disabled_reason, throttled_until, created_at, updated_at;

-- name: rotate_webhook_secret
-- A new secret; the current one keeps signing (as the previous one) for :overlap_seconds.
UPDATE webhook_endpoints
SET previous_secret = secret,
    previous_secret_expires_at = now() + make_interval(secs => :overlap_seconds),
    secret = :secret, updated_at = now()
WHERE id = :id
RETURNING id, url, description, event_types, policy, previous_secret_expires_at, disabled_at,
    disabled_reason, throttled_until, created_at, updated_at;

-- name: disable_webhook_endpoint
-- enabled -> disabled (by an operator, or by a 410 answer); its deliveries wait meanwhile.
UPDATE webhook_endpoints
SET disabled_at = now(), disabled_reason = :reason, updated_at = now()
WHERE id = :id AND disabled_at IS NULL
RETURNING id, url, description, event_types, policy, previous_secret_expires_at, disabled_at,
    disabled_reason, throttled_until, created_at, updated_at;

-- name: enable_webhook_endpoint
-- disabled -> enabled; its waiting deliveries are sent again, and no slow-down is kept.
UPDATE webhook_endpoints
SET disabled_at = NULL, disabled_reason = NULL, throttled_until = NULL, updated_at = now()
WHERE id = :id AND disabled_at IS NOT NULL
RETURNING id, url, description, event_types, policy, previous_secret_expires_at, disabled_at,
    disabled_reason, throttled_until, created_at, updated_at;

-- name: throttle_webhook_endpoint
-- The endpoint asked to slow down: nothing is sent to it before :until.
UPDATE webhook_endpoints
SET throttled_until = greatest(coalesce(throttled_until, :until::timestamptz), :until)
WHERE id = :id;

-- name: insert_webhook_test_delivery
-- A webhook.test message, due now.
INSERT INTO webhook_deliveries (endpoint_id, message_id, type, payload)
VALUES (:endpoint_id, :message_id, 'webhook.test', :payload::jsonb)
RETURNING id, endpoint_id, message_id, upload_id, seq, type, payload, status, attempts,
    next_attempt_at, last_status, last_error, created_at, delivered_at;

-- name: notify_webhook_senders
-- Wake the senders of every process (the upload trigger does the same for its deliveries).
SELECT pg_notify('broker_webhook_deliveries', '');

-- name: due_webhook_endpoints
-- Enabled, unthrottled endpoints with a delivery due and unleased at :now.
SELECT e.id FROM webhook_endpoints e
WHERE e.disabled_at IS NULL
  AND (e.throttled_until IS NULL OR e.throttled_until <= :now::timestamptz)
  AND EXISTS (
      SELECT 1 FROM webhook_deliveries d
      WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= :now
        AND (d.leased_until IS NULL OR d.leased_until <= :now));

-- name: claim_webhook_deliveries
-- Lease up to :limit due deliveries of one endpoint to :lease_owner and count the attempt.
-- A delivery waits while an earlier one (lower seq) of the same upload to the same endpoint
-- is pending, so each upload's events reach an endpoint in seq order: only the head of each
-- upload's queue is claimable (webhook.test deliveries have no upload and no seq). The head
-- is found with ORDER BY ... LIMIT 1 rather than NOT EXISTS: the ordering pins the lookup to
-- webhook_deliveries_order_idx even when the statistics predate a burst, where NOT EXISTS was
-- planned as a scan of every pending delivery of the endpoint (20 ms per claim at 10,000).
-- Rows another sender is claiming are skipped; a lease that ran out (its sender died) is
-- taken over.
WITH claimable AS (
    SELECT d.id FROM webhook_deliveries d
    WHERE d.endpoint_id = :endpoint_id AND d.status = 'pending'
      AND d.next_attempt_at <= :now::timestamptz
      AND (d.leased_until IS NULL OR d.leased_until <= :now)
      AND d.seq IS NOT DISTINCT FROM (
          SELECT head.seq FROM webhook_deliveries head
          WHERE head.endpoint_id = d.endpoint_id AND head.upload_id = d.upload_id
            AND head.status = 'pending'
          ORDER BY head.seq LIMIT 1)
    ORDER BY d.next_attempt_at, d.id
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET leased_until = :now + make_interval(secs => :lease_seconds),
    lease_owner = :lease_owner, attempts = d.attempts + 1
FROM claimable, webhook_endpoints e
WHERE d.id = claimable.id AND e.id = d.endpoint_id AND e.disabled_at IS NULL
RETURNING d.id, d.endpoint_id, d.message_id, d.upload_id, d.seq, d.type, d.payload, d.status,
    d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at,
    e.url, e.secret,
    CASE WHEN e.previous_secret_expires_at > :now THEN e.previous_secret END AS previous_secret;

-- name: mark_webhooks_delivered
-- pending -> delivered for a batch of successful attempts (one commit for many), each only
-- by the sender that still holds its lease; returns those changed, with when their state
-- changed.
UPDATE webhook_deliveries d
SET status = 'delivered', delivered_at = a.delivered_at, leased_until = NULL,
    lease_owner = NULL, last_status = a.http_status, last_error = NULL
FROM unnest(:ids::bigint[], :lease_owners::text[], :delivered_at::timestamptz[],
            :http_statuses::integer[]) AS a(id, lease_owner, delivered_at, http_status)
WHERE d.id = a.id AND d.status = 'pending' AND d.lease_owner = a.lease_owner
RETURNING d.id, d.created_at;

-- name: mark_webhook_attempt_failed
-- A failed attempt: pending again at :next_attempt_at, or dead; only by the lease holder.
UPDATE webhook_deliveries
SET status = :status, next_attempt_at = :next_attempt_at, leased_until = NULL,
    lease_owner = NULL, last_status = :http_status, last_error = :error
WHERE id = :id AND status = 'pending' AND lease_owner = :lease_owner
RETURNING id;

-- name: release_webhook_leases
-- A sender that stops hands back what it holds: due again at once (the same webhook-id).
UPDATE webhook_deliveries SET leased_until = NULL, lease_owner = NULL
WHERE status = 'pending' AND starts_with(lease_owner, :sender || '/');

-- name: get_webhook_delivery
SELECT id, endpoint_id, message_id, upload_id, seq, type, payload, status, attempts,
    next_attempt_at, last_status, last_error, created_at, delivered_at
FROM webhook_deliveries WHERE id = :id;

-- name: list_webhook_deliveries
-- Operators' listing: newest first, keyset-paginated on id.
SELECT id, endpoint_id, message_id, upload_id, seq, type, payload, status, attempts,
    next_attempt_at, last_status, last_error, created_at, delivered_at
FROM webhook_deliveries
WHERE (:endpoint_id::uuid IS NULL OR endpoint_id = :endpoint_id)
  AND (:status::text IS NULL OR status = :status)
  AND (:upload_id::uuid IS NULL OR upload_id = :upload_id)
  AND (:type::text IS NULL OR type = :type)
  AND (:before_id::bigint IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit;

-- name: retry_dead_webhook_delivery
-- dead -> pending, due now, with a fresh retry schedule (the same webhook-id).
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = now(), attempts = 0, leased_until = NULL,
    lease_owner = NULL
WHERE id = :id AND status = 'dead'
RETURNING id, endpoint_id, message_id, upload_id, seq, type, payload, status, attempts,
    next_attempt_at, last_status, last_error, created_at, delivered_at;

-- name: replay_webhook_deliveries
-- Send an endpoint's delivered and dead messages of changes since :since again (the same
-- webhook-ids, so receivers that already have them ignore them).
UPDATE webhook_deliveries
SET status = 'pending', next_attempt_at = now(), attempts = 0, leased_until = NULL,
    lease_owner = NULL
WHERE endpoint_id = :endpoint_id AND created_at >= :since AND status <> 'pending'
RETURNING id;

-- name: webhook_backlog
-- Deliveries not yet delivered nor dead, and when the oldest one's change happened.
SELECT count(*) AS pending, min(created_at) AS oldest_created_at
FROM webhook_deliveries WHERE status = 'pending';

-- name: count_dead_webhook_deliveries
-- Deliveries that gave up (the /ops page), through webhook_deliveries_dead_idx.
SELECT count(*) FROM webhook_deliveries WHERE status = 'dead';

-- ---- rate limits (migration 0012): GCRA, one row per limited key

-- name: take_rate_limits
-- Take actions of several keys' allowances at once: each element of :keys asks for :counts
-- actions of that key, using :interval_seconds of its whole allowance of :period_seconds (a
-- rule of n per period: interval = period / n). A key's row holds tat, the moment its
-- allowance is whole again; an action is allowed while tat, pushed on by one interval,
-- stays within one period from now. Of a key asked k actions, as many as fit are taken
-- (`taken`, 0..k: the first ones asked) and the rest refused. The guard is in the upsert's
-- WHERE and rows are locked in key order, so concurrent batches of every process are counted
-- one after the other, none over the limit gets through, and two batches never deadlock; a
-- key with nothing to take is not changed. `last_taken` carries the count out of the upsert.
-- wait_seconds: for the refused ones, the seconds until one would be allowed (positive).
WITH asked AS (
    SELECT key, sum(n)::int AS wanted, min(interval_seconds) AS interval_seconds,
           min(period_seconds) AS period_seconds
    FROM unnest(:keys::text[], :counts::int[], :interval_seconds::float8[],
                :period_seconds::float8[])
        AS a (key, n, interval_seconds, period_seconds)
    GROUP BY key
), taken AS (
    INSERT INTO rate_limits AS r (key, tat, last_taken)
    SELECT key,
           now() + make_interval(secs => least(wanted, floor(period_seconds / interval_seconds
                                                             + 1e-9)) * interval_seconds),
           least(wanted, floor(period_seconds / interval_seconds + 1e-9))
    FROM asked
    ORDER BY key
    ON CONFLICT (key) DO UPDATE
    -- n, the actions that fit (up to those asked), from the row as locked (it may be newer
    -- than this statement's snapshot): r.tat; asked's values by key.
    SET last_taken = (
            SELECT least(a.wanted, floor((extract(epoch FROM now() - greatest(r.tat, now()))
                                          + a.period_seconds) / a.interval_seconds + 1e-9))
            FROM asked a WHERE a.key = r.key),
        tat = greatest(r.tat, now()) + (
            SELECT make_interval(secs => a.interval_seconds * least(a.wanted, floor(
                       (extract(epoch FROM now() - greatest(r.tat, now())) + a.period_seconds)
                       / a.interval_seconds + 1e-9)))
            FROM asked a WHERE a.key = r.key)
    WHERE (SELECT greatest(r.tat, now()) + make_interval(secs => a.interval_seconds)
                  <= now() + make_interval(secs => a.period_seconds)
           FROM asked a WHERE a.key = r.key)
    RETURNING r.key, r.tat, r.last_taken
)
SELECT a.key, coalesce(t.last_taken, 0) AS taken,
       greatest(extract(epoch FROM coalesce(t.tat,
                                            (SELECT tat FROM rate_limits s WHERE s.key = a.key),
                                            now()) - now())::float8
                + a.interval_seconds - a.period_seconds,
                0.001) AS wait_seconds
FROM asked a LEFT JOIN taken t ON t.key = a.key;

-- name: delete_idle_rate_limits
-- Up to :limit keys whose allowance is whole again (tat passed: the same as no row); rows
-- being taken right now are skipped, and the outer guard is checked again on the row as
-- it is when deleted, so an allowance just taken is never forgotten.
WITH idle AS (
    SELECT key FROM rate_limits WHERE tat < now() LIMIT :limit FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM rate_limits r USING idle WHERE r.key = idle.key AND r.tat < now()
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;

-- ---- download audit (migration 0013): every presigned GET the broker issues

-- name: get_upload_recording_download
-- The owner's upload, as get_upload_for_owner, and in the same statement, when it is
-- finalized (the only state that is given a URL), the audit row of the download about to be
-- signed: one round trip, and no URL without its row. Any other upload records nothing.
WITH upload AS (
    SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata,
        bucket, object_key, policy, transfer, multipart_upload_id, part_size, part_count,
        checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
        created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
        detected_content_type, scan_result, scan_signature
    FROM uploads WHERE id = :id AND owner = :owner
), recorded AS (
    INSERT INTO download_audit (upload_id, requester, expires_in_seconds, request_id,
                                client_address)
    SELECT id, :owner, :expires_in_seconds, :request_id, :client_address
    FROM upload WHERE status = 'finalized'
)
SELECT id, owner, status, filename, content_type, size, size_limit, sha256, metadata, bucket,
    object_key, policy, transfer, multipart_upload_id, part_size, part_count,
    checksum_algorithm, checksum, etag, reject_reason, idempotency_key, request_hash,
    created_at, updated_at, expires_at, finalized_at, rejected_at, expired_at, deleted_at,
    detected_content_type, scan_result, scan_signature
FROM upload;

-- name: list_upload_downloads
-- One upload's downloads, newest first, keyset-paginated on (issued_at, id); only those
-- issued at or after :since when given.
SELECT id, upload_id, requester, issued_at, expires_in_seconds, request_id, client_address
FROM download_audit
WHERE upload_id = :upload_id
  AND (:since::timestamptz IS NULL OR issued_at >= :since)
  AND (:after_issued_at::timestamptz IS NULL
       OR (issued_at, id) < (:after_issued_at::timestamptz, :after_id::bigint))
ORDER BY issued_at DESC, id DESC
LIMIT :limit;

-- name: list_downloads_since
-- Every upload's downloads issued at or after :since, newest first, keyset-paginated on
-- (issued_at, id): a backward walk of download_audit_issued_at_idx that stops at :since.
SELECT id, upload_id, requester, issued_at, expires_in_seconds, request_id, client_address
FROM download_audit
WHERE issued_at >= :since
  AND (:after_issued_at::timestamptz IS NULL
       OR (issued_at, id) < (:after_issued_at::timestamptz, :after_id::bigint))
ORDER BY issued_at DESC, id DESC
LIMIT :limit;

-- name: count_upload_downloads
-- How many URLs were issued for one upload (rows still kept), and when the last one was.
SELECT count(*) AS downloads, max(issued_at) AS last_issued_at
FROM download_audit WHERE upload_id = :upload_id;

-- name: delete_expired_download_audit
-- Retention: delete up to :limit audit rows older than :retention_days days, oldest first;
-- returns how many. SKIP LOCKED: two reconcilers deleting at once split the rows.
WITH expired AS (
    SELECT id FROM download_audit
    WHERE issued_at < now() - make_interval(days => :retention_days)
    ORDER BY issued_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM download_audit WHERE id IN (SELECT id FROM expired) RETURNING id
)
SELECT count(*) FROM deleted;
