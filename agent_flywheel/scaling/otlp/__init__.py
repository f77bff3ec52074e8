"""OpenTelemetry spans in: an OTLP/HTTP trace receiver, OTLP JSON lines files, and where a run reads its spans.

- :mod:`.decoding`: ``ExportTraceServiceRequest`` bodies in protobuf or JSON, gzip or not, into one dict shape,
  and the answers the OTLP/HTTP specification prescribes;
- :mod:`.receiver`: the HTTP server (standard library, a background thread), writing to a sink;
- :mod:`.store`: the documents received, their spans by trace, and waiting for expected traces;
- :mod:`.jsonl`: the file sink of ``flywheel otlp serve`` and the tail that reads such a file as it grows;
- :mod:`.sources`: a run's span sources (its receiver on a configured address, a traces file) from the config.
"""
