"""The `flywheel` command line: shell code over the flows, the deployments and the local stack."""
