"""Operations tooling: run replicas behind HAProxy on one host (`python -m ops.cluster --help`)."""
