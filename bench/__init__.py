"""Benchmarks of the broker against a minimal FastAPI + asyncpg baseline (`make bench`)."""
