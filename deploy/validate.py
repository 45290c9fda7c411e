#!/usr/bin/env python3
"""Offline checks of popularity's deployment files. Run by deploy/validate.sh,
which installs the Python packages this needs (PyYAML, jsonschema,
kubernetes-validate) and renders the kustomize overlays first.

    validate.py --rendered dev=DEV.yaml --rendered production=PROD.yaml \
        --metrics METRICS_FILE [--partitions 6] [--dashboard-rules OUT.yml]

Checks (each prints `ok` or `FAIL`; the exit status is 1 if any failed):
  manifests  every rendered object against the Kubernetes OpenAPI schemas
             (strict: unknown fields fail) or, for KEDA and Prometheus
             Operator kinds, against deploy/schemas/; then the operational
             rules of docs/operations.md (probes, shutdown budget, security
             context, resources, static membership, replicas <= partitions,
             references between objects, configuration keys, no secrets);
  compose    docker-compose.yml against the compose-spec schema, and what
             it must contain (KRaft, topics, Redis persistence, roles);
  alerts     runbook links resolve to docs/operations.md headings, every
             alert has a firing and a silent unit test, the PrometheusRule
             equals the rule file;
  dashboard  well-formed, covers the required metrics;
  names      every metric name used by rules, tests and dashboard is exported
             (present in METRICS_FILE, a scrape of /metrics).
"""
import argparse
import json
import pathlib
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import jsonschema
import yaml
from kubernetes_validate import utils as kv

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
RULES = DEPLOY / "prometheus" / "popularity.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts-tests.yml"
DASHBOARD = DEPLOY / "kubernetes" / "base" / "grafana" / "popularity-dashboard.json"
COMPOSE = ROOT / "docker-compose.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
DEFAULTS = ROOT / "src" / "defaults.toml"

# popularity's own shutdown deadline after SIGTERM (docs/operations.md).
SHUTDOWN_DEADLINE_S = 20
# Seconds left between the end of the deadline and SIGKILL, at least.
SHUTDOWN_MARGIN_S = 5
# Oldest Kubernetes minor the manifests support; also checked: the newest
# that kubernetes-validate knows.
OLDEST_KUBERNETES = "1.29.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}
# Metrics the dashboard must show (DESIGN §6 and docs/operations.md).
DASHBOARD_MUST_USE = [
    "popularity_events_total",
    "popularity_consumer_lag",
    "popularity_event_to_visible_seconds_bucket",
    "popularity_flush_duration_seconds_bucket",
    "popularity_store_operation_duration_seconds_bucket",
    "popularity_store_errors_total",
    "popularity_http_requests_total",
    "popularity_http_request_duration_seconds_bucket",
    "popularity_cache_requests_total",
]
METRIC_TOKEN = re.compile(r"(?<![\w:])((?:popularity|process)_[A-Za-z0-9_]+)")
EXTERNAL_SECRETS = {"popularity-secrets"}


class Report:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def section(self, title):
        print(f"\n== {title}")

    def ok(self, what):
        self.passed += 1
        print(f"  ok    {what}")

    def fail(self, what, why):
        self.failures.append(f"{what}: {why}")
        print(f"  FAIL  {what}: {why}")

    def check(self, condition, what, why):
        if condition:
            self.ok(what)
        else:
            self.fail(what, why)
        return condition


R = Report()


# ----------------------------------------------------------------- helpers

def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def index(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def toml_keys_known(data, defaults, prefix, problems):
    """Every key of `data` must exist in the built-in defaults (unknown keys
    make popularity refuse to start). kafka.properties is free-form."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path == "kafka.properties":
            for k, v in value.items():
                if not isinstance(v, str):
                    problems.append(f"kafka.properties.{k} must be a string")
            continue
        if key not in defaults:
            problems.append(f"unknown key {path}")
            continue
        known = defaults[key]
        if isinstance(value, dict) and isinstance(known, dict):
            toml_keys_known(value, known, path + ".", problems)
        elif isinstance(value, list) and isinstance(known, list) and known and isinstance(known[0], dict):
            for i, item in enumerate(value):
                toml_keys_known(item, known[0], f"{path}[{i}].", problems)
        elif isinstance(value, dict) != isinstance(known, dict):
            problems.append(f"{path} has the wrong shape")


def env_key_known(name, defaults):
    """POPULARITY__SECTION__KEY must name a setting (DESIGN §8)."""
    if not name.startswith("POPULARITY__"):
        return True
    parts = [p.lower() for p in name[len("POPULARITY__"):].split("__")]
    if parts[:2] == ["kafka", "properties"]:
        return len(parts) == 3 and parts[2] != ""
    node = defaults
    for p in parts:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return not isinstance(node, dict)


def github_slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def operations_anchors():
    if not OPERATIONS.exists():
        return set()
    anchors = set()
    for line in OPERATIONS.read_text().splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            anchors.add(github_slug(m.group(1)))
        anchors.update(re.findall(r'<a id="([^"]+)"', line))
    return anchors


# --------------------------------------------------------------- manifests

def validate_schema(env, doc, k8s_versions):
    what = f"{env}: {doc['kind']}/{doc['metadata']['name']}"
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
        R.check(not errors, f"{what} matches deploy/schemas/{CRD_SCHEMAS[key]}",
                "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]))
        return
    for version in k8s_versions:
        try:
            kv.validate(doc, version, strict=True)
            R.ok(f"{what} matches Kubernetes {version} (strict)")
        except kv.ValidationError as e:
            R.fail(f"{what} (Kubernetes {version})", f"{'.'.join(map(str, e.path))}: {e.message}")
        except kv.SchemaNotFoundError as e:
            R.fail(what, e.message)


def container_env(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_deployment(env, objs, dep, defaults):
    name = dep["metadata"]["name"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    what = f"{env}: Deployment/{name}"
    R.check("replicas" not in spec, f"{what} leaves replicas to its autoscaler",
            "spec.replicas is set; an apply would fight the HPA/KEDA")
    pod_labels = spec["template"]["metadata"]["labels"]
    R.check(all(pod_labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
            f"{what} selector matches its pod labels", "selector does not match template labels")
    psc = pod.get("securityContext", {})
    R.check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            f"{what} pod runs as non-root with the RuntimeDefault seccomp profile", f"pod securityContext: {psc}")
    R.check(pod.get("automountServiceAccountToken") is False, f"{what} mounts no service-account token",
            "automountServiceAccountToken is not false")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    for c in pod["containers"]:
        cwhat = f"{what} container {c['name']}"
        image = c.get("image", "")
        R.check(re.match(r"^[\w.\-/:]+:[\w.\-]+$", image) and not image.endswith(":latest"),
                f"{cwhat} image {image} has a pinned tag", "no tag, or :latest")
        sc = c.get("securityContext", {})
        R.check(sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]
                and (sc.get("seccompProfile") or psc.get("seccompProfile", {})).get("type") == "RuntimeDefault",
                f"{cwhat} securityContext: non-root, read-only root, no privilege escalation, drop ALL, RuntimeDefault",
                f"securityContext: {sc}")
        res = c.get("resources", {})
        R.check(all(k in res.get(t, {}) for t in ("requests", "limits") for k in ("cpu", "memory")),
                f"{cwhat} has cpu and memory requests and limits", f"resources: {res}")
        live = c.get("livenessProbe", {}).get("httpGet", {})
        ready = c.get("readinessProbe", {}).get("httpGet", {})
        R.check(live.get("path") == "/healthz" and ready.get("path") == "/readyz",
                f"{cwhat} liveness /healthz, readiness /readyz",
                f"liveness {live.get('path')}, readiness {ready.get('path')}")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        R.check(ports.get("http") == 8080 and live.get("port") == "http" and ready.get("port") == "http",
                f"{cwhat} probes the http port 8080 (api.listen)", f"ports {ports}")
        cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" and cmd[1].isdigit() else None
        R.check(sleep is not None and grace >= sleep + SHUTDOWN_DEADLINE_S + SHUTDOWN_MARGIN_S,
                f"{cwhat} shutdown budget: preStop sleep {sleep} s + {SHUTDOWN_DEADLINE_S} s deadline "
                f"+ {SHUTDOWN_MARGIN_S} s margin <= grace {grace} s",
                f"preStop {cmd}, terminationGracePeriodSeconds {grace}")
        args = c.get("args", [])
        role = args[args.index("--role") + 1] if "--role" in args else None
        expected_role = pod_labels.get("app.kubernetes.io/component")
        R.check(args[:1] == ["serve"] and role == expected_role,
                f"{cwhat} runs `serve --role {expected_role}`", f"args {args}")
        # --config points to the mounted ConfigMap, whose TOML popularity accepts.
        config_path = args[args.index("--config") + 1] if "--config" in args else None
        toml_text = None
        if config_path:
            directory, _, filename = config_path.rpartition("/")
            mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == directory), None)
            volume = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), None)
            cm = objs.get(("ConfigMap", volume["configMap"]["name"])) if volume and "configMap" in volume else None
            toml_text = (cm or {}).get("data", {}).get(filename)
        if not R.check(toml_text is not None, f"{cwhat} --config {config_path} is a mounted ConfigMap key",
                       "no volume/ConfigMap provides that file"):
            continue
        try:
            settings = tomllib.loads(toml_text)
            problems = []
            toml_keys_known(settings, defaults, "", problems)
            R.check(not problems, f"{cwhat} configuration file keys are all known to popularity", "; ".join(problems))
        except tomllib.TOMLDecodeError as e:
            R.fail(f"{cwhat} configuration file", f"not TOML: {e}")
            settings = {}
        # Environment: explicit variables and the ConfigMaps they come from.
        env_vars = {k: v.get("value") for k, v in container_env(c).items()}
        for src in c.get("envFrom", []):
            ref = src.get("configMapRef", {}).get("name")
            cm = objs.get(("ConfigMap", ref))
            if R.check(cm is not None, f"{cwhat} envFrom ConfigMap {ref} exists", "not rendered"):
                for k, v in cm.get("data", {}).items():
                    env_vars.setdefault(k, v)
        unknown = [k for k in env_vars if not env_key_known(k, defaults)]
        R.check(not unknown, f"{cwhat} POPULARITY__ variables all name settings", f"unknown: {unknown}")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                R.check(ref["name"] in EXTERNAL_SECRETS or ("Secret", ref["name"]) in objs,
                        f"{cwhat} env {e['name']} from Secret {ref['name']}", "unknown Secret")
        for v in pod.get("volumes", []):
            if "secret" in v:
                ref = v["secret"]["secretName"]
                R.check(ref in EXTERNAL_SECRETS or ("Secret", ref) in objs,
                        f"{cwhat} volume {v['name']} from Secret {ref}", "unknown Secret")
        c["_settings"] = settings
        c["_env"] = env_vars
    return pod


def check_manifests(env, docs, k8s_versions, partitions, defaults):
    R.section(f"Kubernetes manifests: {env}")
    for doc in docs:
        validate_schema(env, doc, k8s_versions)
    objs = index(docs)
    namespaces = {d["metadata"].get("namespace") for d in docs}
    R.check(len(namespaces) == 1 and None not in namespaces, f"{env}: every object in one namespace {namespaces}",
            f"namespaces: {namespaces}")
    deployments = {n: d for (k, n), d in objs.items() if k == "Deployment"}
    pods = {}
    for name, dep in deployments.items():
        pods[name] = check_deployment(env, objs, dep, defaults)
    consumer = deployments.get("popularity-consumer")
    api = deployments.get("popularity-api")
    images = {c["image"] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
    R.check(len(images) == 1, f"{env}: both roles run the same image {sorted(images)}", f"images {sorted(images)}")
    R.check(consumer is not None and api is not None, f"{env}: consumer and API Deployments", "missing")
    if consumer:
        c = consumer["spec"]["template"]["spec"]["containers"][0]
        env_ = container_env(c)
        gid = env_.get("POPULARITY__KAFKA__PROPERTIES__GROUP_INSTANCE_ID", {})
        R.check(gid.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
                f"{env}: consumer static membership: group.instance.id = pod name (downward API)", f"{gid}")
        pas = env_.get("POPULARITY__KAFKA__PROPERTIES__PARTITION_ASSIGNMENT_STRATEGY", {})
        R.check(pas.get("value") == "cooperative-sticky",
                f"{env}: consumer partition.assignment.strategy = cooperative-sticky", f"{pas}")
        strategy = consumer["spec"].get("strategy", {}).get("rollingUpdate", {})
        R.check(str(strategy.get("maxSurge")) == "0",
                f"{env}: consumer rollout without surge (a surplus consumer never gets ready)", f"{strategy}")
    # Services, PDBs, HPA and ScaledObject point at what exists.
    for (kind, name), o in objs.items():
        if kind in ("Service", "PodDisruptionBudget"):
            sel = o["spec"]["selector"]
            sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
            matches = [n for n, d in deployments.items()
                       if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
            R.check(len(matches) == 1, f"{env}: {kind}/{name} selects Deployment {matches}", "selects no Deployment")
            if kind == "Service":
                for p in o["spec"]["ports"]:
                    R.check(p.get("name") == "http" and p.get("targetPort") == "http",
                            f"{env}: Service/{name} port {p['port']} -> named port http", f"{p}")
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = o["spec"]["scaleTargetRef"]["name"]
            R.check(target in deployments, f"{env}: {kind}/{name} scales Deployment {target}", "no such Deployment")
    hpa = objs.get(("HorizontalPodAutoscaler", "popularity-api"))
    if R.check(hpa is not None, f"{env}: API HorizontalPodAutoscaler", "missing"):
        metrics = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
        R.check("cpu" in metrics and hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"],
                f"{env}: API scales on cpu, {hpa['spec']['minReplicas']}..{hpa['spec']['maxReplicas']} replicas",
                f"metrics {metrics}")
    for name in ("popularity-consumer", "popularity-api"):
        pdb = objs.get(("PodDisruptionBudget", name))
        R.check(pdb is not None, f"{env}: PodDisruptionBudget/{name}", "missing")
    so = objs.get(("ScaledObject", "popularity-consumer"))
    if R.check(so is not None, f"{env}: KEDA ScaledObject for the consumers", "missing"):
        spec = so["spec"]
        mx, mn = spec.get("maxReplicaCount", 100), spec.get("minReplicaCount", 0)
        R.check(1 <= mn <= mx <= partitions,
                f"{env}: consumers scale {mn}..{mx}, never above the {partitions} partitions of events",
                f"minReplicaCount {mn}, maxReplicaCount {mx}, partitions {partitions}")
        down = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {}).get("scaleDown", {})
        pods_policy = [p for p in down.get("policies", []) if p["type"] == "Pods"]
        R.check(down.get("stabilizationWindowSeconds", 0) >= 300 and pods_policy and pods_policy[0]["value"] <= 1,
                f"{env}: slow scale-down (stabilization {down.get('stabilizationWindowSeconds')} s, "
                f"{pods_policy[0]['value'] if pods_policy else '?'} pod per {pods_policy[0]['periodSeconds'] if pods_policy else '?'} s)",
                f"scaleDown {down}")
        triggers = [t for t in spec["triggers"] if t["type"] == "kafka"]
        if R.check(len(triggers) == 1, f"{env}: one kafka trigger", f"{spec['triggers']}"):
            meta = triggers[0]["metadata"]
            if consumer:
                c = consumer["spec"]["template"]["spec"]["containers"][0]
                settings, env_vars = c.get("_settings", {}), c.get("_env", {})
                kafka = settings.get("kafka", {})
                brokers = env_vars.get("POPULARITY__KAFKA__BROKERS") or kafka.get("brokers")
                group = env_vars.get("POPULARITY__KAFKA__GROUP_ID") or kafka.get("group_id", "popularity")
                topic = env_vars.get("POPULARITY__KAFKA__TOPICS__EVENTS") or kafka.get("topics", {}).get("events", "events")
                R.check(meta.get("bootstrapServers") == brokers,
                        f"{env}: KEDA bootstrapServers = consumers' kafka.brokers ({brokers})",
                        f"{meta.get('bootstrapServers')} != {brokers}")
                R.check(meta.get("consumerGroup") == group, f"{env}: KEDA consumerGroup = kafka.group_id ({group})",
                        f"{meta.get('consumerGroup')} != {group}")
                R.check(meta.get("topic") == topic, f"{env}: KEDA topic = kafka.topics.events ({topic})",
                        f"{meta.get('topic')} != {topic}")
            R.check(meta.get("allowIdleConsumers", "false") == "false",
                    f"{env}: KEDA allowIdleConsumers is false", f"{meta.get('allowIdleConsumers')}")
            auth = triggers[0].get("authenticationRef", {}).get("name")
            if auth:
                R.check(("TriggerAuthentication", auth) in objs, f"{env}: TriggerAuthentication/{auth} exists",
                        "referenced but not rendered")
                ta = objs.get(("TriggerAuthentication", auth), {})
                refs = {r["name"] for r in ta.get("spec", {}).get("secretTargetRef", [])}
                R.check(refs <= EXTERNAL_SECRETS | {n for k, n in objs if k == "Secret"},
                        f"{env}: TriggerAuthentication/{auth} reads Secrets {sorted(refs)}", "unknown Secret")
    sm = objs.get(("ServiceMonitor", "popularity"))
    if R.check(sm is not None, f"{env}: ServiceMonitor", "missing"):
        sel = sm["spec"]["selector"]["matchLabels"]
        selected = [n for (k, n), o in objs.items() if k == "Service"
                    and all(o["metadata"].get("labels", {}).get(a) == b for a, b in sel.items())]
        ports = {e.get("port") for e in sm["spec"]["endpoints"]}
        R.check(set(selected) == {"popularity-api", "popularity-consumer"} and ports == {"http"},
                f"{env}: ServiceMonitor scrapes {sorted(selected)} on port http", f"{selected} {ports}")
    pr = objs.get(("PrometheusRule", "popularity"))
    if R.check(pr is not None, f"{env}: PrometheusRule", "missing"):
        R.check(pr["spec"] == yaml.safe_load(RULES.read_text()),
                f"{env}: PrometheusRule equals deploy/prometheus/popularity.rules.yml",
                "differs: run python3 deploy/sync-rules.py")
    dash = [o for (k, n), o in objs.items() if k == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if R.check(len(dash) == 1, f"{env}: Grafana dashboard ConfigMap (label grafana_dashboard=1)", f"{len(dash)} found"):
        data = dash[0].get("data", {})
        R.check(list(data.values()) == [DASHBOARD.read_text()],
                f"{env}: dashboard ConfigMap holds {DASHBOARD.relative_to(ROOT)}", "content differs")
    # No credentials in git: production Secrets come from outside, any rendered
    # one (dev) must not hold a password.
    for (kind, name), o in objs.items():
        if kind == "Secret":
            values = list(o.get("stringData", {}).values())
            import base64
            values += [base64.b64decode(v).decode(errors="replace") for v in o.get("data", {}).values()]
            R.check(env != "production" and not any(re.search(r"://[^/@]*:[^/@]+@|password", v, re.I) for v in values),
                    f"{env}: Secret/{name} holds no credential", "a Secret with credentials is committed")


# ----------------------------------------------------------------- compose

def check_compose(defaults):
    R.section("docker-compose.yml")
    doc = yaml.safe_load(COMPOSE.read_text())
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    # The schema predates its own $schema URL being known to jsonschema; its
    # keywords are all draft-07.
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
    R.check(not errors, "matches the compose-spec JSON schema (deploy/schemas/compose-spec.json)",
            "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]))
    services = doc.get("services", {})
    volumes = set(doc.get("volumes", {}) or {})
    for name, s in services.items():
        deps = s.get("depends_on", {})
        deps = deps if isinstance(deps, list) else list(deps)
        R.check(set(deps) <= set(services), f"service {name}: depends_on {deps} exist", "unknown service")
        for v in s.get("volumes", []):
            source = v.split(":")[0] if isinstance(v, str) else v.get("source")
            if source.startswith("."):
                R.check((ROOT / source).exists(), f"service {name}: bind mount {source} exists", "missing file")
            else:
                R.check(source in volumes, f"service {name}: named volume {source} declared", "undeclared")
        if "build" in s:
            ctx = s["build"] if isinstance(s["build"], str) else s["build"].get("context", ".")
            R.check((ROOT / ctx / "Dockerfile").exists(), f"service {name}: builds {ctx}/Dockerfile", "no Dockerfile")
        env = s.get("environment", {}) or {}
        names = list(env) if isinstance(env, dict) else [e.split("=")[0] for e in env]
        unknown = [k for k in names if not env_key_known(k, defaults)]
        R.check(not unknown, f"service {name}: POPULARITY__ variables all name settings", f"unknown: {unknown}")
    kafka = services.get("kafka", {})
    kenv = kafka.get("environment", {})
    R.check("controller" in str(kenv.get("KAFKA_PROCESS_ROLES", "")) and "zookeeper" not in json.dumps(doc).lower(),
            "Kafka runs in KRaft mode (broker,controller), no ZooKeeper", f"KAFKA_PROCESS_ROLES={kenv.get('KAFKA_PROCESS_ROLES')}")
    init = json.dumps(services.get("topic-init", {}).get("command", ""))
    for topic, extra in (("events", ""), ("articles", "cleanup.policy=compact"), ("events.dlq", "")):
        line = next((l for l in init.split("\\n") if f"--topic {topic} " in l and "--create" in l), "")
        R.check("--partitions 6" in line and extra in line,
                f"topic-init creates {topic} with 6 partitions {extra}".rstrip(), f"command line: {line!r}")
    redis = " ".join(map(str, services.get("redis", {}).get("command", [])))
    R.check(re.search(r"--appendonly yes", redis) and re.search(r"--maxmemory-policy noeviction", redis),
            "Redis: appendonly yes, maxmemory-policy noeviction", redis)
    for name, role in (("consumer", "consumer"), ("api", "api")):
        cmd = services.get(name, {}).get("command", [])
        R.check(cmd[:1] == ["serve"] and "--role" in cmd and cmd[cmd.index("--role") + 1] == role,
                f"service {name} runs `serve --role {role}`", f"command {cmd}")
    lg = services.get("loadgen", {})
    R.check(lg.get("command", [None])[0] == "loadgen" and lg.get("profiles") == ["load"],
            "service loadgen runs `popularity loadgen` in profile load", f"{lg.get('command')} {lg.get('profiles')}")
    prom_cfg = yaml.safe_load((DEPLOY / "compose" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom_cfg["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    R.check({"consumer:8080", "api:8080"} <= targets, "Prometheus scrapes consumer:8080 and api:8080", f"{targets}")
    grafana = " ".join(map(str, services.get("grafana", {}).get("volumes", [])))
    R.check(str(DASHBOARD.relative_to(ROOT)) in grafana and "provisioning" in grafana,
            "Grafana gets the provisioning files and the dashboard", grafana)


# ---------------------------------------------------------- alerts & names

def rule_exprs():
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule


def check_alerts():
    R.section("alert rules and their tests")
    anchors = operations_anchors()
    R.check(bool(anchors), "docs/operations.md has headings", "missing or empty")
    alerts = [r for r in rule_exprs() if "alert" in r]
    tests = yaml.safe_load(RULE_TESTS.read_text())
    firing, silent = set(), set()
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else silent).add(a["alertname"])
    for rule in alerts:
        name = rule["alert"]
        ann = rule.get("annotations", {})
        url = ann.get("runbook_url", "")
        m = re.fullmatch(r"docs/operations\.md#([\w\-]+)", url)
        R.check(m and m.group(1) in anchors, f"{name}: runbook_url {url} resolves to a heading",
                "no such anchor in docs/operations.md")
        R.check(rule.get("labels", {}).get("severity") in ("warning", "critical") and ann.get("summary") and ann.get("description"),
                f"{name}: severity, summary and description", f"labels {rule.get('labels')}")
        R.check(name in firing and name in silent, f"{name}: unit-tested firing and silent",
                f"firing test: {name in firing}, silent test: {name in silent}")


def dashboard_exprs(dash):
    for p in dash.get("panels", []):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield p, t["expr"]


def check_dashboard(rules_out):
    R.section("Grafana dashboard")
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    R.check(len(ids) == len(set(ids)), f"{len(ids)} panels with unique ids", "duplicate panel ids")
    empty = [p["title"] for p in dash["panels"] if p["type"] != "row" and not list(t for t in p.get("targets", []) if t.get("expr"))]
    R.check(not empty, "every panel has a query", f"no query: {empty}")
    used = {m for _, e in dashboard_exprs(dash) for m in METRIC_TOKEN.findall(e)}
    for metric in DASHBOARD_MUST_USE:
        R.check(metric in used, f"dashboard shows {metric}", "not used by any panel")
    if rules_out:
        # promtool checks the syntax of every query, as recording rules.
        rules = []
        for i, (p, e) in enumerate(dashboard_exprs(dash)):
            e = e.replace("$__rate_interval", "5m").replace("$namespace", ".*")
            rules.append({"record": f"dashboard:query_{i}", "expr": e})
        pathlib.Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))


def check_names(metrics_file):
    R.section(f"metric names used vs exported by {metrics_file}")
    exported = set()
    for line in pathlib.Path(metrics_file).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            exported.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    R.check(any(n.startswith("popularity_") for n in exported), f"{metrics_file} is a popularity exposition",
            "no popularity_* sample in it")
    used = {}
    for rule in rule_exprs():
        for m in METRIC_TOKEN.findall(rule["expr"]):
            used.setdefault(m, set()).add("rules")
    for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for s in t.get("input_series", []):
            for m in METRIC_TOKEN.findall(s["series"].split("{")[0]):
                used.setdefault(m, set()).add("rule tests")
    for _, e in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        for m in METRIC_TOKEN.findall(e):
            used.setdefault(m, set()).add("dashboard")
    for m in sorted(used):
        R.check(m in exported, f"{m} ({', '.join(sorted(used[m]))})", "not exported")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rendered", action="append", default=[], metavar="ENV=FILE")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--dashboard-rules", metavar="OUT")
    a = ap.parse_args()
    defaults = tomllib.loads(DEFAULTS.read_text())
    k8s_versions = [OLDEST_KUBERNETES, kv.latest_version()]
    for item in a.rendered:
        env, _, path = item.partition("=")
        check_manifests(env, load_all(path), k8s_versions, a.partitions, defaults)
    check_compose(defaults)
    check_alerts()
    check_dashboard(a.dashboard_rules)
    check_names(a.metrics)
    print(f"\n{R.passed} passed, {len(R.failures)} failed")
    return 1 if R.failures else 0


if __name__ == "__main__":
    sys.exit(main())
