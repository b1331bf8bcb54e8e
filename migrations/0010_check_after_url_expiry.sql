-- Missed webhooks settled in minutes, not at the deadline (issue 12). An upload whose events
-- were all lost used to stay pending until its deadline (24 h by default) although its
-- object had been in storage since minute one. check_after is when the reconciler looks at a
-- pending upload before its deadline: once its last signed URL has expired (no PUT or form
-- POST can change the object any more) plus a grace period, or, for a multipart upload, a
-- grace period after its completion. A check that finds nothing clears it, so each upload
-- costs one early check per URL expiry; the deadline check still follows.
-- migrate:up
ALTER TABLE uploads ADD COLUMN check_after timestamptz;
CREATE INDEX uploads_check_after_idx ON uploads (check_after)
    WHERE status = 'pending' AND check_after IS NOT NULL;

-- migrate:down
DROP INDEX uploads_check_after_idx;
ALTER TABLE uploads DROP COLUMN check_after;
