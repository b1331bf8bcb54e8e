-- Finding uploads by what the app and the operators know: an app's own metadata keys
-- (GET /v1/uploads?metadata.post_id=42, `metadata @> filter`) and part of a filename
-- (GET /v1/admin/uploads?q=holi, `filename ILIKE '%holi%'`). Neither is a prefix, so a
-- b-tree cannot serve them: a GIN index on the JSONB (jsonb_path_ops: containment only,
-- smaller and faster than the default opclass) and a GIN trigram index on the filename.
-- pg_trgm ships with PostgreSQL (Debian: postgresql-15 contrib) and is a trusted extension,
-- so the database owner may create it without superuser rights.
-- migrate:up
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX uploads_metadata_idx ON uploads USING gin (metadata jsonb_path_ops);
CREATE INDEX uploads_filename_trgm_idx ON uploads USING gin (filename gin_trgm_ops);

-- migrate:down
-- The extension stays: it may have been there before this migration (IF NOT EXISTS), and
-- other objects of the database may use it.
DROP INDEX uploads_filename_trgm_idx;
DROP INDEX uploads_metadata_idx;
