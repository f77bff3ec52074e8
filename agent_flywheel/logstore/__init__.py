"""The log store side of the flywheel: the log index, bulk import, paged reading, watermarks, traffic counts.

Everything goes through a narrow client interface (``client``) over the official ``elasticsearch`` or
``opensearch-py`` client (sync), so the same code runs against a production Elasticsearch or OpenSearch cluster
and against the local stack's log server. Modules: ``client`` (the interface), ``elastic`` and ``opensearch``
(its two sides), ``tls`` (a private CA, client certificates), ``index`` (our mapping), ``shape`` (how an index
maps the record fields, read on first contact, and the queries for it), ``writer``, ``reader`` (extraction,
sliced or not), ``watermarks``, ``traffic`` (for the watcher), ``errors`` and ``serializer`` (the Elasticsearch
client's orjson decoding).
"""
