"""The Zoho CRM side: configuration, client, credits.

Modules (import from them directly; this package imports nothing eagerly):

* ``config``    ``ZohoSettings``: hosts, credentials (``Secret``), limits, timeouts, retries.
* ``limits``    Zoho's limits and credit costs as named constants.
* ``endpoints`` ``Endpoints``: accounts / API / upload hosts from a data centre or explicit URLs.
* ``errors``    the exception tree (transient vs fatal) and ``error_from`` (the one mapping).
* ``results``   pure parsers: ``BulkJob``/``JobState``, result files (``ResultRow``/``RowStatus``/
  ``RowError``), upsert items (``UpsertOutcome``).
* ``auth``      ``TokenManager``: one access token shared through Redis, refreshed by one process.
* ``governor``  ``Governor``: concurrency and sub-concurrency caps shared through Redis.
* ``credits``   ``CreditLedger`` and ``ensure_schema``: credits reserved in PostgreSQL first.
* ``client``    ``ZohoClient``: one method per endpoint, wiring all of the above.
"""
