"""NeMo microservices simulator: Entity Store, Customizer, Evaluator and Deployment Management.

Speaks the NeMo v1 API (paths, payloads, status values and codes of ``reference/nemo-microservices-api.md``)
on one port; talks to the Data Store and NIM simulators over HTTP. See ``docs/simulators-nemo.md``.
"""
