"""The Kubernetes manifests hold together and keep what docs/ha.md promises of them.

`make manifests` validates each object against the API schema; these tests check what a
schema cannot see: the objects name each other right, the probes and the Service keep every
replica scraped, the hardening is the systemd unit's, and the command is the daemon's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from walletwatch.cli import _parser, cmd_run, main

MANIFESTS = Path(__file__).parent.parent / "deploy" / "kubernetes"


def objects() -> dict[str, dict[str, Any]]:
    """Every object of the manifests by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found, f"{path}: a second {document['kind']}"
            found[document["kind"]] = document
    return found


@pytest.fixture(name="kinds")
def fixture_kinds() -> dict[str, dict[str, Any]]:
    """The manifests' objects by kind."""
    return objects()


@pytest.fixture(name="pod")
def fixture_pod(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod spec."""
    return dict(kinds["Deployment"]["spec"]["template"]["spec"])


@pytest.fixture(name="container")
def fixture_container(pod: dict[str, Any]) -> dict[str, Any]:
    """The walletwatch container (the only one)."""
    (container,) = pod["containers"]
    return dict(container)


class TestManifests:
    """Two replicas, each scraped, hardened, with its config and secrets where it reads them."""

    def test_the_objects(self, kinds: dict[str, dict[str, Any]]) -> None:
        """A Deployment, a PodDisruptionBudget, a Service and a ConfigMap; never a Secret."""
        assert set(kinds) == {"Deployment", "PodDisruptionBudget", "Service", "ConfigMap"}

    def test_two_replicas_one_disruption_at_a_time(self, kinds: dict[str, dict[str, Any]]) -> None:
        """Two replicas on two nodes; a drain or a rollout takes down one at a time."""
        spec = kinds["Deployment"]["spec"]
        assert spec["replicas"] == 2
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["whenUnsatisfiable"] == "DoNotSchedule"
        assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1

    def test_selectors_match_the_pods(self, kinds: dict[str, dict[str, Any]]) -> None:
        """The Deployment, the budget, the spread and the Service all select the pods."""
        labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
        for selector in (
            kinds["Deployment"]["spec"]["selector"]["matchLabels"],
            kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
            kinds["Deployment"]["spec"]["template"]["spec"]["topologySpreadConstraints"][0][
                "labelSelector"
            ]["matchLabels"],
            kinds["Service"]["spec"]["selector"],
        ):
            assert selector.items() <= labels.items()

    def test_every_replica_stays_scraped(
        self, kinds: dict[str, dict[str, Any]], container: dict[str, Any]
    ) -> None:
        """No probe asks /readyz (a follower never polls, so it would never be ready), and
        the Service lists pods that are not ready, on the container's metrics port."""
        probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
        assert {probe["httpGet"]["path"] for probe in probes} == {"/healthz"}
        service = kinds["Service"]["spec"]
        assert service["publishNotReadyAddresses"] is True
        (port,) = service["ports"]
        (served,) = container["ports"]
        assert port["targetPort"] == served["name"] == "metrics"
        assert {probe["httpGet"]["port"] for probe in probes} == {"metrics"}

    def test_listens_on_the_port_it_is_scraped_on(
        self, kinds: dict[str, dict[str, Any]], container: dict[str, Any]
    ) -> None:
        """The config listens on every address, at the container's metrics port."""
        config = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
        (served,) = container["ports"]
        assert config["listen"] == f"0.0.0.0:{served['containerPort']}"

    def test_hardened_as_the_unit(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        """Not root, no privilege escalation, no capability, a read-only root filesystem,
        the runtime's seccomp profile and no service account token."""
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert "limits" in container["resources"]

    def test_config_and_credentials_where_the_daemon_reads_them(
        self, kinds: dict[str, dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
    ) -> None:
        """`walletwatch run -c` names the ConfigMap's file; CREDENTIALS_DIRECTORY is where the
        Secrets are mounted, readable by the pod's group and by no other user."""
        args = _parser().parse_args(container["args"])
        assert args.func is cmd_run
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        config = volumes["config"]["configMap"]["name"]
        assert config == kinds["ConfigMap"]["metadata"]["name"]
        assert Path(args.config) == Path(mounts["config"]) / "config.yaml"
        assert "config.yaml" in kinds["ConfigMap"]["data"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["CREDENTIALS_DIRECTORY"] == mounts["credentials"]
        projected = volumes["credentials"]["projected"]
        assert projected["defaultMode"] & 0o007 == 0  # walletwatch refuses world-readable
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
        secrets = {source["secret"]["name"] for source in projected["sources"]}
        assert secrets == {"walletwatch-providers", "walletwatch-postgres"}

    def test_config_holds_no_literal_secret(self, kinds: dict[str, dict[str, Any]]) -> None:
        """Every credential and the database password are {credential: NAME} references."""
        config = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
        assert config["store"]["password"] == {"credential": "pg_password"}
        for account in config["accounts"]:
            for value in account["credentials"].values():
                assert set(value) == {"credential"}

    def test_config_passes_check_offline(
        self, kinds: dict[str, dict[str, Any]], tmp_path: Path
    ) -> None:
        """The ConfigMap's config is one `walletwatch check --offline` accepts as it stands."""
        path = tmp_path / "config.yaml"
        path.write_text(kinds["ConfigMap"]["data"]["config.yaml"])
        path.chmod(0o600)
        assert main(["check", "-c", str(path), "--offline"]) == 0
