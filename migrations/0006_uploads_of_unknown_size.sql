-- Uploads whose size is only known once stored (Uppy does not tell Companion the file size):
-- `size` stays NULL until finalization and `size_limit` caps what storage may accept.
-- migrate:up
ALTER TABLE uploads
    ALTER COLUMN size DROP NOT NULL,
    ADD COLUMN size_limit bigint,
    ADD CONSTRAINT uploads_size_known_or_capped CHECK (size IS NOT NULL OR size_limit IS NOT NULL),
    DROP CONSTRAINT uploads_multipart_check,
    -- A multipart upload has its part plan, unless its size was not declared.
    ADD CONSTRAINT uploads_multipart_check CHECK (
        (transfer = 'multipart') = (multipart_upload_id IS NOT NULL)
        AND (transfer <> 'multipart' OR size_limit IS NOT NULL
             OR (part_size IS NOT NULL AND part_count IS NOT NULL))
    );

-- migrate:down
DELETE FROM uploads WHERE size_limit IS NOT NULL;
ALTER TABLE uploads
    DROP CONSTRAINT uploads_multipart_check,
    ADD CONSTRAINT uploads_multipart_check CHECK (
        (transfer = 'multipart') = (multipart_upload_id IS NOT NULL
                                    AND part_size IS NOT NULL AND part_count IS NOT NULL)
    ),
    DROP CONSTRAINT uploads_size_known_or_capped,
    DROP COLUMN size_limit,
    ALTER COLUMN size SET NOT NULL;
