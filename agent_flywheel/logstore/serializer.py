"""How the Elasticsearch client decodes the log store's answers: orjson where it gives what ``json`` gives.

Reading a page of log records is mostly JSON decoding, and the client's default decoder (the standard
library's ``json``) is two to three times slower than orjson. orjson is not a drop-in replacement for
every input, though, and a log index holds whatever producers wrote:

- it refuses ``NaN``, ``Infinity``, numbers that overflow a double and lone surrogates, which ``json``
  accepts (the validator then quarantines the record, naming the field);
- it silently turns integers beyond 64 bits into floats, where ``json`` keeps them exact.

So :class:`LogStoreSerializer` decodes with orjson only when the answer holds no run of 19 or more digits
(no integer that could lie beyond 64 bits, in strings or not) and orjson accepts it; anything else is
decoded by ``json`` as before. Either way the result is what ``json`` returns.

A page of 500 records is a few hundred thousand new objects, and the garbage collector, triggered every
few hundred of them, would walk the young ones again and again (doubling the decode time); a decoded
tree holds no reference cycles, so the collector is paused while orjson builds it.
"""

from __future__ import annotations

import gc
from typing import Any

import orjson
from elasticsearch.serializer import JsonSerializer

# 19 digits: the shortest integers that may not fit in 64 bits (2**63 has 19 digits). Every digit becomes
# "0" and every other byte a space, so that a plain substring search finds a run (ten times faster than re).
_LONG_DIGIT_RUN = b"0" * 19
_DIGITS_ONLY = bytes(ord("0") if byte in b"0123456789" else ord(" ") for byte in range(256))


class LogStoreSerializer(JsonSerializer):
    """The client's JSON serializer, decoding with orjson when that gives the same values (see the module)."""

    def json_loads(self, data: bytes) -> Any:
        """Decode one answer; the standard library decodes what orjson would refuse or alter."""
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        if raw.translate(_DIGITS_ONLY).find(_LONG_DIGIT_RUN) < 0:
            collecting = gc.isenabled()
            gc.disable()
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
            finally:
                if collecting:
                    gc.enable()
        return super().json_loads(data)
