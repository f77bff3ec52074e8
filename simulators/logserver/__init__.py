"""The log server: a local stand-in for Elasticsearch (the REST subset the flywheel uses), persisted in SQLite.

SIMULATED. The official ``elasticsearch`` client runs unchanged against it: it answers as Elasticsearch
9.x (``X-Elastic-Product`` header, compatible-with media types for 8.x and 9.x clients), with ES's paths,
payloads and error shapes. See :mod:`.server` for the endpoints and :mod:`.storage` for the data layout.
"""

from simulators.logserver.server import LogServerSettings, create_app

__all__ = ["LogServerSettings", "create_app"]
