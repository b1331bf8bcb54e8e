-- Live status: every state change after creation is announced with NOTIFY, in the same
-- transaction as the change (it is sent only if that transaction commits).
-- migrate:up
CREATE FUNCTION broker_notify_upload_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'broker_upload_changes',
        json_build_object('upload_id', NEW.upload_id, 'event_id', NEW.id, 'status', NEW.status)::text
    );
    RETURN NULL;
END;
$$;

-- Creation (status pending) is not announced: nobody can be listening to an upload that
-- does not exist yet, and the create path stays free of NOTIFY's commit-time lock.
CREATE TRIGGER upload_history_notify
    AFTER INSERT ON upload_history
    FOR EACH ROW
    WHEN (NEW.status <> 'pending')
    EXECUTE FUNCTION broker_notify_upload_change();

-- migrate:down
DROP TRIGGER upload_history_notify ON upload_history;
DROP FUNCTION broker_notify_upload_change();
