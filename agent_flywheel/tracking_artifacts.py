"""Where MLflow artifacts go: never onto a worker's own disk unless the whole store is local.

An experiment's artifact location is fixed when it is created. MLflow's defaults put it on the disk of
whoever creates the experiment when the tracking URI is a database (``postgresql://...``: ``./mlruns`` of
the worker's current directory, lost with the pod). So:

- a **local** store (SQLite or a file store: development) keeps artifacts under the flywheel home;
- a **tracking server** (``http(s)://``) decides: started with ``--artifacts-destination`` it proxies them
  (``mlflow-artifacts:/``), so workers need no storage credentials;
- a **database** URI needs a configured ``artifact_root`` (``s3://bucket/path``, ``gs://``, a ``file:`` path on
  a shared volume ...), else the tracker refuses to start. It cannot use a server's artifact proxy
  (``mlflow-artifacts:``): MLflow reaches that only through a tracking server's URL.

A configured ``artifact_root`` wins in every case. An experiment that already exists keeps its location;
:func:`check_artifact_location` refuses one that lies on the worker's disk when the store does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

StoreKind = Literal["local", "server", "database"]

#: SQLAlchemy back ends MLflow supports besides SQLite (``postgresql+psycopg2://`` counts as ``postgresql``).
DATABASE_SCHEMES = frozenset({"postgresql", "mysql", "mssql"})


class ArtifactLocationError(ValueError):
    """MLflow would write artifacts where they are lost (one line: what, where, and the fix)."""


def store_kind(tracking_uri: str) -> StoreKind:
    """Whether a tracking URI is a local store, a tracking server or a database reached directly."""
    scheme = urlsplit(tracking_uri).scheme.split("+", 1)[0].lower()
    if tracking_uri.startswith("databricks"):  # "databricks", "databricks-uc", "databricks://profile"
        return "server"
    if scheme in ("", "file", "sqlite") or len(scheme) == 1:  # a one-letter scheme is a Windows drive
        return "local"
    if scheme in DATABASE_SCHEMES:
        return "database"
    return "server"


def public_uri(uri: str) -> str:
    """``uri`` without the password of its ``user:password@``, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user = f"{parts.username}:***@" if parts.username else "***@"
    return parts._replace(netloc=user + parts.netloc.rpartition("@")[2]).geturl()


def with_database_login(uri: str, username: str | None, password: str) -> str:
    """A database URI with ``username``/``password`` as its login (the password URL-quoted), so a secret kept
    apart from the URI reaches SQLAlchemy."""
    parts = urlsplit(uri)
    user = username or parts.username or ""
    login = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return parts._replace(netloc=login + parts.netloc.rpartition("@")[2]).geturl()


def is_local_location(location: str) -> bool:
    """Whether an artifact location is a path on this machine (``file:``, absolute or relative)."""
    scheme = urlsplit(location).scheme
    return scheme in ("", "file") or len(scheme) == 1


def _is_relative_path(location: str) -> bool:
    return urlsplit(location).scheme == "" and not Path(location).is_absolute()


def artifact_root(tracking_uri: str, configured: str | None, local_default: Callable[[], Path]) -> str | None:
    """The root under which new experiments keep their artifacts; None lets the tracking server decide.

    Raises :class:`ArtifactLocationError` for a database URI without ``configured`` (artifacts would go to
    ``./mlruns`` of the worker) and for a relative ``configured`` path. ``local_default`` is the root of a
    local store (called only for one).
    """
    if configured:
        if _is_relative_path(configured):
            raise ArtifactLocationError(
                f"MLflow artifact_root {configured!r} is a relative path, which lands in each worker's current "
                "directory: give a URI such as s3://bucket/flywheel or an absolute path on a shared volume"
            )
        if store_kind(tracking_uri) == "database" and _is_proxied(configured):
            raise _unreachable_proxy("MLflow artifact_root", configured, tracking_uri)
        return configured.rstrip("/")
    kind = store_kind(tracking_uri)
    if kind == "local":
        return local_default().as_uri()
    if kind == "database":
        raise ArtifactLocationError(
            f"MLflow tracking URI {public_uri(tracking_uri)} is a database: without an artifact root MLflow "
            "writes artifacts to ./mlruns on this worker, which is lost with it; set the MLflow block's "
            "artifact_root (e.g. s3://bucket/flywheel), or track through an MLflow server (http://...) "
            "started with --artifacts-destination"
        )
    return None


def check_artifact_location(experiment: str, location: str, tracking_uri: str, configured: str | None) -> None:
    """Refuse an experiment whose artifacts lie on this worker's disk while its runs are tracked elsewhere.

    A local store may keep local artifacts; so may a ``file:`` ``artifact_root`` the block names (a shared
    volume chosen on purpose). Anything else local is an experiment made by a server that does not proxy
    artifacts, or made before the artifact root was set. A worker on the database itself cannot reach a
    server's artifact proxy either (an experiment the server made).
    """
    kind = store_kind(tracking_uri)
    if kind == "database" and _is_proxied(location):
        raise _unreachable_proxy(f"MLflow experiment {experiment!r} keeps its artifacts at", location, tracking_uri)
    if kind == "local" or not is_local_location(location):
        return
    if configured and not _is_relative_path(configured) and _same_place(location, configured):
        return
    raise ArtifactLocationError(
        f"MLflow experiment {experiment!r} keeps its artifacts at {location}, on this worker's disk, while its "
        f"runs are tracked at {public_uri(tracking_uri)}: they would be lost with the worker; start the MLflow "
        "server with --artifacts-destination (it then proxies artifacts) or set the MLflow block's "
        "artifact_root, and give the experiment a new name or delete it (its location cannot change)"
    )


def _is_proxied(location: str) -> bool:
    """Whether a location is a tracking server's artifact proxy (``mlflow-artifacts:``)."""
    return urlsplit(location).scheme == "mlflow-artifacts"


def _unreachable_proxy(what: str, location: str, tracking_uri: str) -> ArtifactLocationError:
    return ArtifactLocationError(
        f"{what} {location}, an MLflow server's artifact proxy, which MLflow reaches only through that server, not "
        f"from "
        f"the database {public_uri(tracking_uri)}: set the MLflow block's tracking_uri to that server's "
        "http(s):// URL, or give artifact_root the server's own artifact store (s3://...) and new experiment names"
    )


def _same_place(location: str, root: str) -> bool:
    """Whether ``location`` lies under ``root``, either written as a path or a ``file:`` URI."""

    def as_path(text: str) -> str:
        parts = urlsplit(text)
        return (parts.path if parts.scheme == "file" else text).rstrip("/")

    path, base = as_path(location), as_path(root)
    return path == base or path.startswith(base + "/")
