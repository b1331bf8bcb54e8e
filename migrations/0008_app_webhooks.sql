-- Webhooks to the app's server (Standard Webhooks): the endpoints operators register, and a
-- transactional outbox of deliveries, written by a trigger in the same transaction as each
-- state change, so a change without its deliveries (or deliveries of a rolled-back change)
-- cannot exist.
-- migrate:up
CREATE TABLE webhook_endpoints (
    id                         uuid        PRIMARY KEY,
    url                        text        NOT NULL,
    description                text        NOT NULL DEFAULT '',
    event_types                text[]      NOT NULL DEFAULT '{}',  -- empty = every type
    policy                     text,                               -- NULL = every policy
    secret                     text        NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    disabled_at                timestamptz,
    disabled_reason            text,
    throttled_until            timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_event_types_check CHECK (
        event_types <@ ARRAY['upload.created', 'upload.finalized', 'upload.rejected',
                             'upload.expired', 'upload.deleted']::text[]
    ),
    CONSTRAINT webhook_endpoints_secret_check CHECK (secret ~ '^whsec_[A-Za-z0-9+/=]{44}$'),
    CONSTRAINT webhook_endpoints_previous_secret_check
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);

CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id      text        NOT NULL,  -- the webhook-id header, the same on every attempt
    upload_id       uuid        REFERENCES uploads (id) ON DELETE CASCADE,
    seq             bigint,                -- upload_history.id; NULL for webhook.test
    type            text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    lease_owner     text,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),  -- when the state changed
    delivered_at    timestamptz,
    CONSTRAINT webhook_deliveries_status_check
        CHECK (status IN ('pending', 'delivered', 'dead')),
    CONSTRAINT webhook_deliveries_type_check
        CHECK (type IN ('upload.created', 'upload.finalized', 'upload.rejected',
                        'upload.expired', 'upload.deleted', 'webhook.test')),
    CONSTRAINT webhook_deliveries_message_unique UNIQUE (endpoint_id, message_id)
);

-- The senders' claim: due deliveries, and the earlier pending ones of the same upload.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (endpoint_id, upload_id, seq)
    WHERE status = 'pending';
-- Operators' listings: newest first, by endpoint or by upload.
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_upload_idx ON webhook_deliveries (upload_id, id DESC);
-- /ops counts the dead on every refresh: only they are in this index.
CREATE INDEX webhook_deliveries_dead_idx ON webhook_deliveries (id) WHERE status = 'dead';

CREATE FUNCTION broker_enqueue_webhook_deliveries() RETURNS trigger
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

-- Even a trigger that returns at once costs PostgreSQL ~25 us of CPU per history row (every
-- create pays it), so the trigger exists only while an enabled endpoint does, and only for
-- the history statuses some enabled endpoint takes: its WHEN clause is checked without
-- calling the function, so an app that takes only upload.finalized costs creates nothing.
-- This statement trigger rebuilds it after any change of endpoints, with upload_history
-- locked against writes so that no state change commits between the look and the rebuild.
CREATE FUNCTION broker_switch_webhook_deliveries() RETURNS trigger
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

CREATE TRIGGER webhook_endpoints_switch_deliveries
    AFTER INSERT OR DELETE OR UPDATE OF disabled_at, event_types ON webhook_endpoints
    FOR EACH STATEMENT
    EXECUTE FUNCTION broker_switch_webhook_deliveries();

-- No endpoint exists yet, so neither does upload_history_webhook_deliveries.

-- migrate:down
DROP TRIGGER webhook_endpoints_switch_deliveries ON webhook_endpoints;
DROP FUNCTION broker_switch_webhook_deliveries();
DROP TRIGGER IF EXISTS upload_history_webhook_deliveries ON upload_history;
DROP FUNCTION broker_enqueue_webhook_deliveries();
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
