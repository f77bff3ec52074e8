"""Names the flywheel derives from workload ids and model names, valid for every service that receives them.

A workload id is whatever the producer logged: NeMo Agent Toolkit's default is literally ``"<workflow>"``,
others carry slashes, spaces, capitals or non-ASCII text. The names made from it must be accepted by:

- the Data Store (Hugging Face Hub rules): ``[A-Za-z0-9._-]``, no ``--`` or ``..``, no leading or trailing
  ``-``/``.``, at most 96 characters, not ending in ``.git``;
- NeMo entities (datasets, customization jobs, output models) in the same namespace;
- Kubernetes-style DNS-1123 names where NeMo Deployment Management turns a name into cluster resources:
  lower-case alphanumerics, ``-`` and ``.``, starting and ending alphanumeric, at most 63 per dot-separated part;
- MLflow registered models (no ``/`` or ``:``).

One rule serves all of them: a **label** is the lower-case ASCII slug of the text (runs of anything else become
one ``-``) followed by ``-`` and 8 hex digits of the SHA-256 of the original text. The slug keeps names readable,
the hash keeps them apart (``a/b`` and ``a-b`` have the same slug, not the same label) and stable (the same id
always gives the same label). The original id is never lost: it goes into descriptions, ``custom_fields`` and
MLflow tags, which take any text.

Model names are the exception: ``meta/llama-3.2-1b-instruct`` keeps the blueprint's readable
``meta-llama-3.2-1b-instruct`` when that is already valid everywhere (so DMS deployments the blueprint created
are found and reused); a model name that is not (capitals, a tag, too long) gets a label like a workload id.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

HASH_CHARS = 8
#: The Hugging Face Hub's limit on a repo name (without the namespace).
MAX_REPO_NAME = 96
#: A DNS-1123 label (one dot-separated part of a Kubernetes name).
MAX_DNS_LABEL = 63
#: How much of a dataset name a workload's label may take, so kind, model and digest still fit in 96.
WORKLOAD_LABEL_IN_DATASETS = 36
MODEL_LABEL_IN_DATASETS = 30

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_VALID_PART = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def short_hash(text: str) -> str:
    """8 hex digits of the SHA-256 of ``text``: what keeps two labels with the same slug apart."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def slug(text: str, max_length: int) -> str:
    """Lower-case ASCII letters and digits joined by single ``-``, at most ``max_length`` characters.

    Accents are dropped (``é`` → ``e``); any other run of characters becomes one ``-``; may be empty
    (``"<>"``, ``"日本"``).
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return _NOT_SLUG.sub("-", ascii_text).strip("-")[:max_length].rstrip("-")


def label(text: str, max_length: int = 40) -> str:
    """``<slug>-<hash8>`` of ``text`` in at most ``max_length`` characters (``x-<hash8>`` when nothing of
    the text survives the slug): stable, distinct for distinct texts, valid in every name rule above."""
    if max_length < HASH_CHARS + 2:
        raise ValueError(f"max_length must be at least {HASH_CHARS + 2}")
    part = slug(text, max_length - HASH_CHARS - 1) or "x"
    return f"{part}-{short_hash(text)}"


def workload_label(workload_id: str, max_length: int = 40) -> str:
    """The label of a workload id, for every name the flywheel creates for it (see the module docstring)."""
    return label(workload_id, max_length)


def is_valid_name(name: str, max_length: int = MAX_DNS_LABEL) -> bool:
    """Whether ``name`` is accepted as is by the Data Store, NeMo entities and, within 63 characters,
    DNS-1123 (lower-case alphanumerics and ``-``, dots between parts; no ``--`` or ``..``)."""
    if not 0 < len(name) <= max_length or name.endswith(".git") or "--" in name:
        return False
    parts = name.split(".")
    longest = MAX_DNS_LABEL if max_length <= MAX_DNS_LABEL else max_length
    return all(len(part) <= longest and _VALID_PART.fullmatch(part) for part in parts)


def model_label(model_name: str, max_length: int = MAX_DNS_LABEL) -> str:
    """A model name as a name part: ``meta/llama-3.2-1b-instruct`` → ``meta-llama-3.2-1b-instruct`` (the
    blueprint's form) when that is valid and fits, otherwise the model name's :func:`label`."""
    plain = model_name.strip().replace("/", "-")
    return plain if is_valid_name(plain, max_length) else label(model_name, max_length)


def dataset_name(kind: str, workload_id: str, digest: str, model_name: str | None = None) -> str:
    """``flywheel-<kind>-<workload label>[-<model>]-<digest>``: a Data Store repo and Entity Store dataset name.

    ``digest`` is the content hash of the dataset's files (the same records make the same dataset). Always
    valid and at most 96 characters, whatever the workload id and model name.
    """
    parts = ["flywheel", slug(kind, 16), workload_label(workload_id, WORKLOAD_LABEL_IN_DATASETS)]
    if model_name is not None:
        parts.append(model_label(model_name, MODEL_LABEL_IN_DATASETS))
    parts.append(slug(digest, 16))
    return _checked("-".join(parts), MAX_REPO_NAME)


def customization_job_name(workload_id: str | None, model_name: str, key: str | None = None) -> str:
    """``flywheel-<workload label or model>[-<key>]``: a Customizer job name (at most 63 characters)."""
    subject = workload_label(workload_id) if workload_id else model_label(model_name.split("/")[-1], 40)
    name = f"flywheel-{subject}"
    if key:
        name = f"{name}-{slug(key, 12)}"
    return _checked(name, MAX_DNS_LABEL)


def deployment_name(model_name: str) -> str:
    """A DMS deployment name for a model: :func:`model_label` (``meta-llama-3.2-1b-instruct``, as the blueprint)."""
    return model_label(model_name, MAX_DNS_LABEL)


def output_model_name(model_name: str) -> str:
    """The Customizer output model's name: ``customized-<model>`` (NeMo versions it with ``@<job id>``)."""
    return _checked(f"customized-{model_label(model_name, MAX_DNS_LABEL - 11)}", MAX_DNS_LABEL)


def registered_model_name(workload_id: str) -> str:
    """The MLflow registered model of a workload: ``flywheel-<workload_id>`` when MLflow takes it as is (the
    name users already have), otherwise ``flywheel-<workload label>``."""
    plain = workload_id.strip() == workload_id and 0 < len(workload_id) <= 200
    if plain and not any(c in workload_id for c in "/:%") and ".." not in workload_id:
        return f"flywheel-{workload_id}"
    return f"flywheel-{workload_label(workload_id)}"


def _checked(name: str, max_length: int) -> str:
    if not is_valid_name(name, max_length):  # a bug in the rules above, never the user's input
        raise AssertionError(f"derived name {name!r} is not valid")
    return name
