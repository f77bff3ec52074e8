"""The Elasticsearch side of the flywheel: the log index, bulk import, paged reading, watermarks, traffic counts.

Everything goes through the official ``elasticsearch`` client (sync), so the same code runs against a
production cluster and against the local stack's log server. Modules: ``index`` (our mapping),
``shape`` (how an index maps the record fields, read on first contact, and the queries for it), ``writer``,
``reader`` (extraction), ``watermarks``, ``traffic`` (for the watcher), ``errors`` and ``serializer`` (the
client's orjson decoding).
"""
