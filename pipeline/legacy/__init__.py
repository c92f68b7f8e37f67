"""The legacy side: sync state in the legacy PostgreSQL database, extraction, rendering, marking.

Pure Python over psycopg2; nothing here knows Celery.
"""
