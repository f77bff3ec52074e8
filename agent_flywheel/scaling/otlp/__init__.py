"""An OTLP/HTTP trace receiver, so a profiling run can collect an agent's spans directly.

- :mod:`.store`: the documents received, and waiting until expected traces have arrived;
- :mod:`.decoding`: ``ExportTraceServiceRequest`` bodies in protobuf or JSON, gzip or not, into one dict shape,
  and the answers the OTLP/HTTP specification prescribes;
- :mod:`.receiver`: the HTTP server (standard library, a background thread).
"""
