"""From validated log records to the NeMo dataset files: dedupe, stratified split, ICL examples, manifest.

The entry point is :func:`agent_flywheel.datasets.build.build_datasets`; the other modules are its steps:
``scan`` (the keys of every record), ``split``, ``icl_selection``, ``semantic`` and ``icl_sets``
(in-context examples), ``sources`` (records read again by position), ``formats`` and ``output`` (the
files and the manifest).
"""
