"""Log records: the schema of one logged LLM call, its validation and quarantine, and what the pipeline keeps
of it (conversation hash, keys, the record cache).

Modules: ``schema`` (the typed record), ``timestamps``, ``validation`` and ``quarantine`` (bad input never
raises and is never dropped: it is quarantined with a reason from ``problems``), ``strict_json`` (the JSON
and size checks), ``documents`` (the indexed document, its id, the dedupe hash), ``conversation`` (the
conversation hash, ICL blocks), ``tool_arguments``, ``model_filter``, ``keys`` and ``cache`` (the record
cache the dataset build reads).
"""
