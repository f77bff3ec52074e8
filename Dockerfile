# The flows' image: every deployment of prefect.yaml on the Kubernetes work pool, `flywheel otlp serve`
# (deploy/kubernetes/otlp-receiver.yaml) and the load generator workers (deploy/kubernetes/loadgen-job.yaml) all
# run it (docs/operations.md, "Production on Kubernetes"). The Prefect worker that starts the flow runs' Jobs is
# Prefect's own (its Helm chart and image, at the Prefect version of requirements.lock).
#
#   docker build -t registry.example.com/agent-flywheel:0.1.0 .
#
# The project is installed from requirements.lock (the versions that were tested) without the `dev`, `simulators`
# or `bench` extras: no test tool, no server of the local stack. The code stays at /opt/agent-flywheel, the
# directory the deployments' `pull` step enters (prefect.yaml, definitions.kubernetes.code_dir): a flow run loads
# its entrypoint (flows/flywheel.py) and its config (configs/flywheel.yaml) relative to it.
#
# The Kubernetes worker starts each flow run as a Job whose container args are `prefect flow-run execute`; the
# default command only prints the CLI's help. tini is PID 1, so SIGTERM (a cancelled run, a deleted pod) reaches
# Prefect and the pod stops at once instead of after its grace period.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 flywheel \
    && useradd --uid 10001 --gid flywheel --create-home --home-dir /home/flywheel --shell /usr/sbin/nologin flywheel \
    && python -m venv /opt/venv

# Writable state of a non-root user: Prefect's home (profiles, local result storage) and FLYWHEEL_HOME (logs and
# what a run writes locally); matplotlib and Hugging Face caches go under the same home.
ENV HOME=/home/flywheel \
    FLYWHEEL_HOME=/home/flywheel/flywheel \
    PREFECT_HOME=/home/flywheel/prefect \
    MPLCONFIGDIR=/home/flywheel/matplotlib \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

WORKDIR /opt/agent-flywheel

# The dependencies first, in a layer of their own that a code change does not rebuild: the project's metadata with
# empty packages resolves them from the lock; the project itself is installed once its code is copied.
COPY pyproject.toml requirements.lock README.md ./
RUN mkdir -p agent_flywheel flows tasks blocks deployments cli simulators \
    && pip install -c requirements.lock . \
    && pip uninstall -y agent-flywheel \
    && rm -rf build ./*.egg-info

COPY agent_flywheel ./agent_flywheel
COPY flows ./flows
COPY tasks ./tasks
COPY blocks ./blocks
COPY deployments ./deployments
COPY cli ./cli
COPY simulators ./simulators
COPY configs ./configs
COPY prefect.yaml ./
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && flywheel --help > /dev/null

# `flywheel --help` above ran as root: the home is handed to the user the flows run as.
RUN mkdir -p "$FLYWHEEL_HOME" "$PREFECT_HOME" "$MPLCONFIGDIR" && chown -R 10001:10001 /home/flywheel

USER 10001:10001

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["flywheel", "--help"]
