-- Operators filter the listing by content type too; without a matching index a newest-first
-- scan has to step over every recent upload of other types.
-- migrate:up
CREATE INDEX uploads_content_type_created_idx ON uploads (content_type, created_at DESC, id DESC);

-- migrate:down
DROP INDEX uploads_content_type_created_idx;
