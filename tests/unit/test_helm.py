"""The Helm chart, rendered by the real `helm` (tools/helm.sh installs the pinned version
with `go install` on first use) and checked object by object.

Both the default values and helm/switchboard/values-production.yaml are linted and
rendered; the checks are about what an operator hosting strangers relies on: secrets only
through secretKeyRef and only where used, locked-down pods, the probes, the NetworkPolicy,
and an Ingress that routes every public path of the app to the service that serves it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route, WebSocketRoute

from switchboard.broker_config import security_problems
from switchboard.keys import generate_secret_key_b64
from switchboard.settings import Settings, env_names

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "switchboard"
PRODUCTION = CHART / "values-production.yaml"
SERVICES = ("api", "ingress", "stream", "router", "deliverer", "sync")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN", re.IGNORECASE)
# Where each secret may go, from the code: the admin token is checked by the API and the
# stream gateway; Meta's app secret verifies webhooks (ingress) and signs Graph calls
# (api: set-up and removal, deliverer: sends); the verify token answers Meta's handshake
# and the signing secret checks Slack's events (ingress); the OAuth secret is the API's.
SECRET_HOMES = {
    "SWITCHBOARD_SECRET_KEY": set(SERVICES),
    "SWITCHBOARD_SECRET_KEYS": set(SERVICES),
    "SWITCHBOARD_ADMIN_TOKEN": {"api", "stream"},
    "SWITCHBOARD_METRICS_TOKEN": set(SERVICES),  # every pod serves /metrics
    "SWITCHBOARD_META_APP_SECRET": {"api", "ingress", "deliverer"},
    "SWITCHBOARD_META_VERIFY_TOKEN": {"ingress"},
    "SWITCHBOARD_SLACK_SIGNING_SECRET": {"ingress"},
    "SWITCHBOARD_SLACK_CLIENT_SECRET": {"api"},
}
DEFAULTS = ["--set", "kafka.bootstrapServers=kafka:9092",
            "--set", "secret.secretKey=c2VjcmV0", "--set", "secret.adminToken=sbadm_x"]


@cache
def helm() -> str:
    """The pinned helm, installed into .tools/bin by tools/helm.sh when missing."""
    out = subprocess.run([str(ROOT / "tools" / "helm.sh")], capture_output=True, text=True,
                         timeout=1800, check=False)
    assert out.returncode == 0, f"installing helm failed:\n{out.stderr}"
    return out.stdout.strip().splitlines()[-1]


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)


def render(*args: str) -> list[dict[str, Any]]:
    out = run_helm("template", "sb", str(CHART), *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


VARIANTS = {"default": DEFAULTS, "production": ["-f", str(PRODUCTION)]}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(*VARIANTS[request.param])


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of `kind`, by component (or name)."""
    return {d["metadata"]["labels"].get("app.kubernetes.io/component", d["metadata"]["name"]): d
            for d in docs if d["kind"] == kind}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any],
                                                              dict[str, Any]]]:
    for name, dep in of_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            yield name, pod, c


@pytest.mark.parametrize("name", list(VARIANTS))
def test_helm_lint(name: str) -> None:
    out = run_helm("lint", "--strict", str(CHART), *VARIANTS[name])
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_service_is_deployed(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = variant
    assert set(of_kind(docs, "Deployment")) == set(SERVICES)
    assert set(of_kind(docs, "Service")) == set(SERVICES)


def test_secrets_only_by_reference_and_only_where_used(
        variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = variant
    seen: dict[str, set[str]] = {}
    for name, _pod, c in containers(docs):
        for env in c["env"]:
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{name}: {env['name']} is a plain value"
                assert env["valueFrom"]["secretKeyRef"]["name"], env
                seen.setdefault(env["name"], set()).add(name)
    for var, homes in SECRET_HOMES.items():
        assert seen.get(var) == homes, f"{var} in {seen.get(var)}, expected {homes}"


def test_every_variable_is_a_setting(variant: tuple[str, list[dict[str, Any]]]) -> None:
    # The settings, plus the one variable the CLI reads itself (logging is set up first).
    known = {env for env, _default in env_names().values()} | {"SWITCHBOARD_LOG_LEVEL"}
    for name, _pod, c in containers(docs := variant[1]):
        unknown = {e["name"] for e in c["env"]} - known
        assert not unknown, f"{name}: {unknown} are not settings"
    assert docs


def test_pods_are_locked_down(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = variant
    for name, pod, c in containers(docs):
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["privileged"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert c["args"][:2] == ["serve", name]


def test_probes(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = variant
    for name, _pod, c in containers(docs):
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        # Long enough for a broker that is still starting (the app serves only once up).
        start = c["startupProbe"]
        assert start["periodSeconds"] * start["failureThreshold"] >= 120, name


def test_network_policy_only_when_enabled() -> None:
    assert of_kind(render(*DEFAULTS), "NetworkPolicy") == {}
    policies = of_kind(render(*DEFAULTS, "--set", "networkPolicy.enabled=true"),
                       "NetworkPolicy")
    assert set(policies) == set(SERVICES)
    for name, policy in policies.items():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == name
        assert [p["port"] for rule in spec["ingress"] for p in rule["ports"]] == ["http"]
        blocks = [peer["ipBlock"] for rule in spec["egress"] for peer in rule.get("to", [])
                  if "ipBlock" in peer]
        if name in ("api", "ingress", "deliverer", "sync"):  # webhooks, provider APIs, CRMs
            assert len(blocks) == 1 and blocks[0]["cidr"] == "0.0.0.0/0"
            assert {"169.254.0.0/16", "10.0.0.0/8", "127.0.0.0/8"} <= set(blocks[0]["except"])
        else:
            assert blocks == [], name


def test_production_values(variant: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = variant
    if name != "production":
        assert of_kind(docs, "Ingress") == {}  # opt-in
        return
    assert of_kind(docs, "Secret") == {}  # the operator's existing Secret
    assert set(of_kind(docs, "NetworkPolicy")) == set(SERVICES)
    for svc, pod, c in containers(docs):
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["SWITCHBOARD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["SWITCHBOARD_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert (env["SWITCHBOARD_TOPIC_REPLICATION_FACTOR"],
                env["SWITCHBOARD_TOPIC_MIN_INSYNC_REPLICAS"]) == ("3", "2")
        ca = env["SWITCHBOARD_KAFKA_SSL_CA_FILE"]
        mount = next(m for m in c["volumeMounts"] if ca.startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "switchboard-kafka-ca", svc
    # The Settings the pods would build are consistent (TLS + SASL, no stray values).
    sample = next(c for _svc, _pod, c in containers(docs))
    plain = {e["name"]: e["value"] for e in sample["env"] if "value" in e}
    settings = Settings.from_env({**plain, "SWITCHBOARD_KAFKA_SASL_PASSWORD": "x"})
    assert security_problems(settings) == []


def _app_paths() -> dict[str, str]:
    """Every public path the app serves, and which service serves it."""
    from switchboard.services.app import build_app

    settings = Settings(secret_key=generate_secret_key_b64())
    out: dict[str, str] = {}
    for service in SERVICES:
        for route in build_app(settings, [service]).routes:
            assert isinstance(route, Route | WebSocketRoute)
            # Probes and metrics are per pod, scraped inside the cluster, never public.
            if route.path not in ("/healthz", "/readyz", "/metrics"):
                out[route.path] = service
    return out


def test_the_ingress_routes_every_public_path_to_its_service() -> None:
    docs = render("-f", str(PRODUCTION))
    (ingress,) = of_kind(docs, "Ingress").values()
    rules = ingress["spec"]["rules"]
    assert [r["host"] for r in rules] == ["switchboard.example.com"]
    assert ingress["spec"]["tls"][0]["hosts"] == ["switchboard.example.com"]
    prefixes = {p["path"]: p["backend"]["service"]["name"].removeprefix("sb-switchboard-")
                for p in rules[0]["http"]["paths"] if p["pathType"] == "Prefix"}
    paths = _app_paths()
    assert {"/webchat/{integrationId}/ws", "/ingress/meta", "/ingress/slack",
            "/ingress/{integrationId}"} <= set(paths)
    for path, service in paths.items():
        # Kubernetes Prefix matching is by path element; the longest prefix wins.
        matches = [p for p in prefixes if path == p or path.startswith(p.rstrip("/") + "/")]
        assert matches, f"{path} ({service}) is not routed"
        assert prefixes[max(matches, key=len)] == service, path
    assert prefixes["/webchat"] == "ingress"


@pytest.mark.parametrize(("args", "says"), [
    (["--set", "config.SWITCHBOARD_META_APP_SECRET=x"], "looks secret"),
    (["--set", "services.api.env.SWITCHBOARD_SLACK_CLIENT_SECRET=x"], "looks secret"),
    (["--set", "extraEnv[0].name=SWITCHBOARD_KAFKA_SASL_PASSWORD",
      "--set", "extraEnv[0].value=x"], "needs valueFrom.secretKeyRef"),
    (["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.password=x"],
     "kafka.sasl.username is required"),
    (["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.username=u"],
     "kafka.sasl.password is required"),
    (["--set", "kafka.securityProtocol=TLS"], "kafka.securityProtocol must be one of"),
])
def test_unsafe_values_are_refused(args: list[str], says: str) -> None:
    out = run_helm("template", "sb", str(CHART), *DEFAULTS, *args)
    assert out.returncode != 0 and says in out.stderr, out.stderr


def test_sasl_password_comes_from_the_secret() -> None:
    docs = render(*DEFAULTS, "--set", "kafka.securityProtocol=SASL_SSL",
                  "--set", "kafka.sasl.username=hub", "--set", "kafka.sasl.password=pw")
    (secret,) = of_kind(docs, "Secret").values()
    assert "kafka-sasl-password" in secret["data"]
    for name, _pod, c in containers(docs):
        (ref,) = [e for e in c["env"] if e["name"] == "SWITCHBOARD_KAFKA_SASL_PASSWORD"]
        assert ref["valueFrom"]["secretKeyRef"]["key"] == "kafka-sasl-password", name


MONITORING = [*DEFAULTS, "--set", "secret.metricsToken=m" + "x" * 40,
              "--set", "metrics.serviceMonitor.enabled=true",
              "--set", "metrics.prometheusRule.enabled=true",
              "--set", "metrics.grafanaDashboard.enabled=true"]


def _metric_names() -> set[str]:
    """Every series name the hub can expose (counters as _total, histograms by suffix)."""
    from switchboard.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        names |= {family.name, f"{family.name}_total", f"{family.name}_bucket",
                  f"{family.name}_count", f"{family.name}_sum"}
    # Gauges the services serve at scrape time (Metrics.observe).
    code = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    names |= set(re.findall(r'"(switchboard_[a-z_]+)"', code))
    return names


def test_monitoring_objects_scrape_with_the_metrics_token_and_use_real_metrics() -> None:
    docs = render(*MONITORING)
    assert run_helm("lint", "--strict", str(CHART), *MONITORING).returncode == 0
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert endpoint["bearerTokenSecret"] == {"name": "sb-switchboard-secrets",
                                             "key": "metrics-token"}
    # It selects every Service of the release, and each serves the port it scrapes.
    services = [d for d in docs if d["kind"] == "Service"]
    assert len(services) == len(SERVICES)
    for svc in services:
        labels = svc["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert "metrics-token" in secret["data"]

    known = _metric_names()
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == {
        "SwitchboardConsumerLag", "SwitchboardDeadLetters", "SwitchboardOpenCircuits",
        "SwitchboardIngress5xx"}
    (board,) = [d for d in docs
                if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]]
    dashboard = json.loads(board["data"]["switchboard.json"])
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        used = set(re.findall(r"switchboard_[a-z_]+", expr))
        assert used and used <= known, f"{expr}: unknown {used - known}"


def test_a_service_monitor_needs_the_metrics_token() -> None:
    out = run_helm("template", "sb", str(CHART), *DEFAULTS,
                   "--set", "metrics.serviceMonitor.enabled=true")
    assert out.returncode != 0 and "secret.metricsToken is required" in out.stderr


def test_the_sync_worker(variant: tuple[str, list[dict[str, Any]]]) -> None:
    """`switchboard serve sync` runs as its own Deployment: replicas, the probes every
    service has, a memory limit sized for the pair index it folds, and only the secrets
    it uses (the sealing keys open profile credentials; no admin or provider secret)."""
    name, docs = variant
    dep = of_kind(docs, "Deployment")["sync"]
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"] == ["serve", "sync", "--port", "8080"]
    assert c["resources"]["limits"]["memory"] == "1Gi"
    assert c["resources"]["requests"] == {"cpu": "100m", "memory": "192Mi"}
    secrets = {e["name"] for e in c["env"] if "valueFrom" in e}
    assert secrets - {"SWITCHBOARD_KAFKA_SASL_PASSWORD"} == {
        "SWITCHBOARD_SECRET_KEY", "SWITCHBOARD_SECRET_KEYS", "SWITCHBOARD_METRICS_TOKEN"}
    assert of_kind(docs, "Service")["sync"]["spec"]["ports"][0]["targetPort"] == "http"
    off = render(*VARIANTS[name], "--set", "services.sync.enabled=false")
    assert "sync" not in of_kind(off, "Deployment") and "sync" not in of_kind(off, "Service")
    scaled = render(*VARIANTS[name], "--set", "services.sync.replicas=5",
                    "--set", "services.sync.env.SWITCHBOARD_SYNC_MAX_RETRY_AFTER_S=60")
    dep = of_kind(scaled, "Deployment")["sync"]
    assert dep["spec"]["replicas"] == 5
    [c] = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SWITCHBOARD_SYNC_MAX_RETRY_AFTER_S"] == "60"
