-- Trusting what was stored (issue 11): the type the broker detected in an object's first
-- bytes, and malware scanning. A scanned policy's upload goes pending -> scanning once its
-- bytes are verified, then finalized (clean, or scan skipped under fail-open) or quarantined
-- (infected; an admin may release it). Scan jobs are rows claimed with a lease, written in
-- the same statement that moves the upload to scanning.
-- migrate:up
ALTER TABLE uploads
    DROP CONSTRAINT uploads_status_check,
    ADD CONSTRAINT uploads_status_check
        CHECK (status IN ('pending', 'scanning', 'finalized', 'quarantined', 'rejected',
                          'expired', 'deleted')),
    ADD COLUMN detected_content_type text,
    ADD COLUMN scan_result text,
    ADD COLUMN scan_signature text,
    ADD CONSTRAINT uploads_scan_result_check
        CHECK (scan_result IN ('clean', 'infected', 'skipped'));

CREATE TABLE scan_jobs (
    upload_id       uuid        PRIMARY KEY REFERENCES uploads (id) ON DELETE CASCADE,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    lease_owner     text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- The scanners' claim: the due jobs, oldest first.
CREATE INDEX scan_jobs_due_idx ON scan_jobs (next_attempt_at);

-- Wake the scanners of every process when a job is queued (they poll as a fallback).
CREATE FUNCTION broker_notify_scan_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('broker_scan_jobs', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER scan_jobs_notify AFTER INSERT ON scan_jobs
    FOR EACH ROW EXECUTE FUNCTION broker_notify_scan_jobs();

-- Apps hear of quarantined uploads: upload.quarantined. Every event type is now
-- 'upload.' || the history status, except upload.created (pending); scanning is not an event
-- (an app learns the verdict from upload.finalized or upload.quarantined).
ALTER TABLE webhook_endpoints
    DROP CONSTRAINT webhook_endpoints_event_types_check,
    ADD CONSTRAINT webhook_endpoints_event_types_check CHECK (
        event_types <@ ARRAY['upload.created', 'upload.finalized', 'upload.rejected',
                             'upload.expired', 'upload.deleted', 'upload.quarantined']::text[]
    );
ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_type_check,
    ADD CONSTRAINT webhook_deliveries_type_check
        CHECK (type IN ('upload.created', 'upload.finalized', 'upload.rejected',
                        'upload.expired', 'upload.deleted', 'upload.quarantined',
                        'webhook.test'));

CREATE OR REPLACE FUNCTION broker_enqueue_webhook_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    event_type text;
    upload     uploads%ROWTYPE;
    queued     integer;
BEGIN
    -- The create path pays one index probe when no endpoint exists.
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) THEN
        RETURN NULL;
    END IF;
    event_type := CASE NEW.status WHEN 'pending' THEN 'upload.created'
                                  ELSE 'upload.' || NEW.status END;
    -- An AFTER trigger sees every change of its statement: the upload as changed.
    SELECT * INTO upload FROM uploads WHERE id = NEW.upload_id;
    INSERT INTO webhook_deliveries (endpoint_id, message_id, upload_id, seq, type, payload,
                                    created_at)
    SELECT e.id, 'msg_' || NEW.id, NEW.upload_id, NEW.id, event_type,
           jsonb_build_object(
               'type', event_type,
               'timestamp', to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'id', upload.id, 'owner', upload.owner, 'policy', upload.policy,
                   'status', NEW.status, 'size', upload.size,
                   'content_type', upload.content_type, 'sha256', upload.sha256,
                   'detected_content_type', upload.detected_content_type,
                   'metadata', upload.metadata, 'seq', NEW.id)),
           NEW.at
    FROM webhook_endpoints e
    WHERE e.disabled_at IS NULL
      AND (cardinality(e.event_types) = 0 OR event_type = ANY (e.event_types))
      AND (e.policy IS NULL OR e.policy = upload.policy);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM pg_notify('broker_webhook_deliveries', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION broker_switch_webhook_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    statuses text;
BEGIN
    LOCK TABLE upload_history IN SHARE ROW EXCLUSIVE MODE;
    -- upload.created is the history's 'pending'; every other type is its status.
    SELECT string_agg(DISTINCT quote_literal(
               CASE type WHEN 'upload.created' THEN 'pending'
                         ELSE substr(type, length('upload.') + 1) END), ', ')
    INTO statuses
    FROM webhook_endpoints e,
         unnest(CASE WHEN cardinality(e.event_types) = 0
                     THEN ARRAY['upload.created', 'upload.finalized', 'upload.rejected',
                                'upload.expired', 'upload.deleted', 'upload.quarantined']
                     ELSE e.event_types END) AS type
    WHERE e.disabled_at IS NULL AND type LIKE 'upload.%';
    DROP TRIGGER IF EXISTS upload_history_webhook_deliveries ON upload_history;
    IF statuses IS NOT NULL THEN
        EXECUTE format(
            'CREATE TRIGGER upload_history_webhook_deliveries AFTER INSERT ON upload_history'
            ' FOR EACH ROW WHEN (NEW.status IN (%s))'
            ' EXECUTE FUNCTION broker_enqueue_webhook_deliveries()', statuses);
    END IF;
    RETURN NULL;
END;
$$;
-- Rebuild the history trigger for endpoints that take every event (they now take
-- upload.quarantined too): a no-op update fires the statement trigger.
UPDATE webhook_endpoints SET disabled_at = disabled_at WHERE false;

-- migrate:down
-- Uploads in the new states go back to what the old schema can say: scanning ones are
-- pending again (the reconciler settles them), quarantined ones are rejected.
DELETE FROM webhook_deliveries WHERE type = 'upload.quarantined';
UPDATE webhook_endpoints SET event_types = array_remove(event_types, 'upload.quarantined');
DROP TABLE scan_jobs;
DROP FUNCTION broker_notify_scan_jobs();
UPDATE uploads SET status = 'pending' WHERE status = 'scanning';
UPDATE uploads SET status = 'rejected', rejected_at = now() WHERE status = 'quarantined';
ALTER TABLE uploads
    DROP CONSTRAINT uploads_scan_result_check,
    DROP COLUMN scan_signature,
    DROP COLUMN scan_result,
    DROP COLUMN detected_content_type,
    DROP CONSTRAINT uploads_status_check,
    ADD CONSTRAINT uploads_status_check
        CHECK (status IN ('pending', 'finalized', 'rejected', 'expired', 'deleted'));
ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_type_check,
    ADD CONSTRAINT webhook_deliveries_type_check
        CHECK (type IN ('upload.created', 'upload.finalized', 'upload.rejected',
                        'upload.expired', 'upload.deleted', 'webhook.test'));
ALTER TABLE webhook_endpoints
    DROP CONSTRAINT webhook_endpoints_event_types_check,
    ADD CONSTRAINT webhook_endpoints_event_types_check CHECK (
        event_types <@ ARRAY['upload.created', 'upload.finalized', 'upload.rejected',
                             'upload.expired', 'upload.deleted']::text[]
    );
-- The functions as migration 0008 made them.
CREATE OR REPLACE FUNCTION broker_enqueue_webhook_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    event_type text;
    upload     uploads%ROWTYPE;
    queued     integer;
BEGIN
    -- The create path pays one index probe when no endpoint exists.
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) THEN
        RETURN NULL;
    END IF;
    event_type := CASE NEW.status
        WHEN 'pending' THEN 'upload.created'
        WHEN 'finalized' THEN 'upload.finalized'
        WHEN 'rejected' THEN 'upload.rejected'
        WHEN 'expired' THEN 'upload.expired'
        WHEN 'deleted' THEN 'upload.deleted'
    END;
    -- An AFTER trigger sees every change of its statement: the upload as changed.
    SELECT * INTO upload FROM uploads WHERE id = NEW.upload_id;
    INSERT INTO webhook_deliveries (endpoint_id, message_id, upload_id, seq, type, payload,
                                    created_at)
    SELECT e.id, 'msg_' || NEW.id, NEW.upload_id, NEW.id, event_type,
           jsonb_build_object(
               'type', event_type,
               'timestamp', to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'id', upload.id, 'owner', upload.owner, 'policy', upload.policy,
                   'status', NEW.status, 'size', upload.size,
                   'content_type', upload.content_type, 'sha256', upload.sha256,
                   'metadata', upload.metadata, 'seq', NEW.id)),
           NEW.at
    FROM webhook_endpoints e
    WHERE e.disabled_at IS NULL
      AND (cardinality(e.event_types) = 0 OR event_type = ANY (e.event_types))
      AND (e.policy IS NULL OR e.policy = upload.policy);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM pg_notify('broker_webhook_deliveries', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE OR REPLACE FUNCTION broker_switch_webhook_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    statuses text;
BEGIN
    LOCK TABLE upload_history IN SHARE ROW EXCLUSIVE MODE;
    -- upload.created is the history's 'pending'; every other type is its status.
    SELECT string_agg(DISTINCT quote_literal(
               CASE type WHEN 'upload.created' THEN 'pending'
                         ELSE substr(type, length('upload.') + 1) END), ', ')
    INTO statuses
    FROM webhook_endpoints e,
         unnest(CASE WHEN cardinality(e.event_types) = 0
                     THEN ARRAY['upload.created', 'upload.finalized', 'upload.rejected',
                                'upload.expired', 'upload.deleted']
                     ELSE e.event_types END) AS type
    WHERE e.disabled_at IS NULL AND type LIKE 'upload.%';
    DROP TRIGGER IF EXISTS upload_history_webhook_deliveries ON upload_history;
    IF statuses IS NOT NULL THEN
        EXECUTE format(
            'CREATE TRIGGER upload_history_webhook_deliveries AFTER INSERT ON upload_history'
            ' FOR EACH ROW WHEN (NEW.status IN (%s))'
            ' EXECUTE FUNCTION broker_enqueue_webhook_deliveries()', statuses);
    END IF;
    RETURN NULL;
END;
$$;
UPDATE webhook_endpoints SET disabled_at = disabled_at WHERE false;
