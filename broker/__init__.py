"""Presigned-URL upload broker for PostgreSQL + MinIO."""
