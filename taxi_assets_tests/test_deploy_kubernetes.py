"""deploy/kubernetes/run_launcher.yaml: the instance on Kubernetes loads dagster-k8s's launcher.

No cluster exists here. The instance is the project's dagster.yaml with its run launcher block
replaced by the file, over a database of the suite's PostgreSQL; the launcher is built by
Dagster from that config, loading its in-cluster Kubernetes configuration for real from the
environment a pod has (service host and port, a service-account token and CA file), whose
file paths, fixed inside a pod, are pointed at temporary files here.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import kubernetes.config.incluster_config as incluster
import yaml

from taxi_assets_tests.dagster_processes import DAGSTER_YAML, REPO_ROOT, create_database

K8S_RUN_LAUNCHER = REPO_ROOT / "deploy" / "kubernetes" / "run_launcher.yaml"


def kubernetes_instance_text() -> str:
    """The cluster's instance config, made as the Dockerfile makes the compose stack's."""
    local = DAGSTER_YAML.read_text()
    return local[: local.index("\nrun_launcher:")] + "\n" + K8S_RUN_LAUNCHER.read_text()


def as_in_a_pod(monkeypatch, tmp_path: Path) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("a-service-account-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(ca))


def test_the_kubernetes_instance_loads_the_k8s_run_launcher_from_deploy(
    postgres, monkeypatch, tmp_path
):
    from dagster_k8s import K8sRunLauncher

    as_in_a_pod(monkeypatch, tmp_path)
    monkeypatch.setenv("DAGSTER_PG_URL", create_database(postgres, "k8s_instance"))
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "taxi_home"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(kubernetes_instance_text())
    config = yaml.safe_load(K8S_RUN_LAUNCHER.read_text())["run_launcher"]["config"]

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == config["job_namespace"]
        assert launcher.service_account_name == config["service_account_name"]
        assert launcher.env_config_maps == config["env_config_maps"]
        assert launcher.env_secrets == config["env_secrets"]
        assert launcher.volume_mounts == config["volume_mounts"]
        assert launcher.resources == config["resources"]
        # Run monitoring (dagster.yaml) asks the launcher whether a run's pod is alive.
        assert launcher.supports_check_run_worker_health
        # Everything but the launcher is the project's instance: same queue, pools, monitoring.
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
        assert instance.run_monitoring_enabled
    finally:
        instance.dispose()


def test_a_run_pod_fits_the_measured_run_and_is_never_retried_by_kubernetes():
    config = yaml.safe_load(K8S_RUN_LAUNCHER.read_text())["run_launcher"]["config"]
    limit = config["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(limit[:-2]) >= 1024
    assert config["run_k8s_config"]["job_spec_config"]["backoff_limit"] == 0
    # Staged Parquet is shared by the month's run and its days' runs.
    [mount] = config["volume_mounts"]
    assert mount["mountPath"] == "/opt/dagster/taxi_home"
