#!/usr/bin/env python3
"""The checks of popularity's deployment files that no standard tool knows.
deploy/validate.sh runs the standard ones first (kubectl kustomize,
kubernetes-validate, check-jsonschema, checkov, promtool, hadolint) and then
this, on the overlays it rendered. Configuration keys are checked by the Rust
test `deployment_files_name_only_settings_that_exist` against the real
Settings type.

    validate.py --rendered ENV=FILE... --metrics METRICS_FILE [--partitions 6] [--dashboard-rules OUT]
"""
import argparse
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/popularity.rules.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts-tests.yml"
DASHBOARD = ROOT / "deploy/kubernetes/base/grafana/popularity-dashboard.json"
OPERATIONS = ROOT / "docs/operations.md"
# popularity's shutdown deadline after SIGTERM (ingest.shutdown_deadline), and
# the margin left before SIGKILL.
SHUTDOWN_DEADLINE_S, SHUTDOWN_MARGIN_S = 20, 5
DASHBOARD_MUST_USE = [
    "popularity_events_total", "popularity_consumer_lag",
    "popularity_event_to_visible_seconds_bucket", "popularity_flush_duration_seconds_bucket",
    "popularity_store_operation_duration_seconds_bucket", "popularity_store_errors_total",
    "popularity_http_requests_total", "popularity_http_request_duration_seconds_bucket",
    "popularity_cache_requests_total", "popularity_heap_bytes",
]
METRIC = re.compile(r"(?<![\w:])((?:popularity|process)_[A-Za-z0-9_]+)")
failures = []


def check(ok, what, why):
    print(f"  {'ok  ' if ok else 'FAIL'}  {what}" + ("" if ok else f": {why}"))
    if not ok:
        failures.append(what)
    return ok


def env_of(container, objs):
    """A container's environment: explicit values and its envFrom ConfigMaps."""
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
    for src in container.get("envFrom", []):
        cm = objs.get(("ConfigMap", src.get("configMapRef", {}).get("name")), {})
        for k, v in cm.get("data", {}).items():
            env.setdefault(k, v)
    return env


def check_overlay(env, docs, partitions):
    print(f"\n== {env}: what only popularity knows")
    objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deps = {n: d for (k, n), d in objs.items() if k == "Deployment"}
    for name, dep in deps.items():
        pod = dep["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod["containers"]:
            cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            sleep = int(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" and cmd[1].isdigit() else 0
            check(grace >= sleep + SHUTDOWN_DEADLINE_S + SHUTDOWN_MARGIN_S,
                  f"{name}: preStop sleep {sleep} s + shutdown deadline {SHUTDOWN_DEADLINE_S} s "
                  f"+ margin {SHUTDOWN_MARGIN_S} s <= terminationGracePeriodSeconds {grace} s", f"preStop {cmd}")
            args = c.get("args", [])
            role = dep["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
            check(args[:1] == ["serve"] and "--role" in args and args[args.index("--role") + 1] == role,
                  f"{name}: runs `serve --role {role}`", f"args {args}")
            probes = (c.get("livenessProbe", {}).get("httpGet", {}).get("path"),
                      c.get("readinessProbe", {}).get("httpGet", {}).get("path"))
            check(probes == ("/healthz", "/readyz"), f"{name}: liveness /healthz, readiness /readyz", f"{probes}")
        check("replicas" not in dep["spec"], f"{name}: replicas left to its autoscaler", "spec.replicas is set")
    for (kind, name), o in objs.items():
        if kind in ("Service", "PodDisruptionBudget"):
            sel = o["spec"]["selector"]
            sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
            hits = [n for n, d in deps.items()
                    if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
            check(len(hits) == 1, f"{kind}/{name} selects one Deployment {hits}", "selects none or several")
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = o["spec"]["scaleTargetRef"]["name"]
            check(target in deps, f"{kind}/{name} scales Deployment {target}", "no such Deployment")
    consumer = deps.get("popularity-consumer")
    so = objs.get(("ScaledObject", "popularity-consumer"))
    if not (check(consumer is not None, "consumer Deployment", "missing")
            and check(so is not None, "KEDA ScaledObject of the consumers", "missing")):
        return
    c = consumer["spec"]["template"]["spec"]["containers"][0]
    cenv = env_of(c, objs)
    gid = cenv.get("POPULARITY__KAFKA__PROPERTIES__GROUP_INSTANCE_ID") or {}
    check(gid.get("fieldRef", {}).get("fieldPath") == "metadata.name",
          "consumer static membership: group.instance.id = pod name", f"{gid}")
    check(cenv.get("POPULARITY__KAFKA__PROPERTIES__PARTITION_ASSIGNMENT_STRATEGY") == "cooperative-sticky",
          "consumer partition.assignment.strategy = cooperative-sticky", "not set")
    spec = so["spec"]
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    check(1 <= low <= high <= partitions,
          f"consumers scale {low}..{high}, never above the {partitions} partitions of the events topic",
          "a consumer beyond the partitions idles and KEDA keeps it")
    trigger = next((t for t in spec["triggers"] if t["type"] == "kafka"), {"metadata": {}})["metadata"]
    want = {"bootstrapServers": cenv.get("POPULARITY__KAFKA__BROKERS"),
            "consumerGroup": cenv.get("POPULARITY__KAFKA__GROUP_ID", "popularity"),
            "topic": cenv.get("POPULARITY__KAFKA__TOPICS__EVENTS", "events")}
    for key, value in want.items():
        check(trigger.get(key) == value, f"KEDA trigger {key} = the consumers' setting {value}", f"{trigger.get(key)}")
    check(trigger.get("allowIdleConsumers", "false") == "false", "KEDA allowIdleConsumers false", "true")
    pr = objs.get(("PrometheusRule", "popularity"), {})
    check(pr.get("spec") == yaml.safe_load(RULES.read_text()), "PrometheusRule equals the rule file",
          "run python3 deploy/sync-rules.py")
    dash = [o for (k, _), o in objs.items() if k == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    check(len(dash) == 1 and list(dash[0].get("data", {}).values()) == [DASHBOARD.read_text()],
          "dashboard ConfigMap holds the dashboard file", "missing or different")


def check_compose():
    print("\n== docker-compose.yml: what only popularity knows")
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    s = doc.get("services", {})
    check("controller" in str(s.get("kafka", {}).get("environment", {}).get("KAFKA_PROCESS_ROLES")),
          "Kafka in KRaft mode", "KAFKA_PROCESS_ROLES")
    init = json.dumps(s.get("topic-init", {}).get("command", ""))
    for topic, extra in (("events", ""), ("articles", "cleanup.policy=compact"), ("events.dlq", "")):
        line = next((l for l in init.split("\\n") if f"--topic {topic} " in l and "--create" in l), "")
        check("--partitions 6" in line and extra in line, f"topic {topic}: 6 partitions {extra}".rstrip(), line)
    redis = " ".join(map(str, s.get("redis", {}).get("command", [])))
    check("--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis,
          "Redis: appendonly yes, noeviction", redis)
    for name in ("consumer", "api"):
        cmd = s.get(name, {}).get("command", [])
        check(cmd[:1] == ["serve"] and name in cmd, f"service {name} runs `serve --role {name}`", f"{cmd}")
    for name, service in s.items():
        for port in service.get("ports", []):
            check(str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on loopback only", "on every interface")
    secret = str(s.get("collector", {}).get("environment", {}).get("POPULARITY__COLLECTOR__VISITOR_SECRET", ""))
    check(":?" in secret and "change-me" not in secret,
          "the collector's visitor secret has no default (compose refuses to start without one)", secret)


def check_alerts_and_names(metrics_file, dashboard_rules):
    print("\n== alerts, dashboard, metric names")
    anchors = {re.sub(r"[^\w\- ]", "", m.strip().lower()).replace(" ", "-")
               for m in re.findall(r"^#{1,6}\s+(.*)$", OPERATIONS.read_text(), re.M)}
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = [(a["alertname"], bool(a.get("exp_alerts"))) for t in tests for a in t.get("alert_rule_test", [])]
    for r in (r for r in rules if "alert" in r):
        url = r.get("annotations", {}).get("runbook_url", "")
        check(url.split("#")[-1] in anchors, f"{r['alert']}: runbook {url} is a heading of docs/operations.md", "no such heading")
        check((r["alert"], True) in tested and (r["alert"], False) in tested,
              f"{r['alert']}: unit-tested firing and silent", "a case is missing")
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", []) if t.get("expr")]
    used = {m for e in exprs for m in METRIC.findall(e)}
    for m in DASHBOARD_MUST_USE:
        check(m in used, f"dashboard shows {m}", "no panel uses it")
    pathlib.Path(dashboard_rules).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$namespace", ".*")}
        for i, e in enumerate(exprs)]}]}))
    exported = {re.split(r"[{\s]", l, maxsplit=1)[0] for l in pathlib.Path(metrics_file).read_text().splitlines()
                if l.strip() and not l.startswith("#")}
    names = used | {m for r in rules for m in METRIC.findall(r["expr"])}
    names |= {m for t in tests for s in t.get("input_series", []) for m in METRIC.findall(s["series"].split("{")[0])}
    for m in sorted(names):
        check(m in exported, f"{m} is exported by the service", f"not in {metrics_file}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rendered", action="append", default=[])
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--dashboard-rules", required=True)
    a = ap.parse_args()
    for item in a.rendered:
        env, _, path = item.partition("=")
        check_overlay(env, [d for d in yaml.safe_load_all(open(path)) if d], a.partitions)
    check_compose()
    check_alerts_and_names(a.metrics, a.dashboard_rules)
    print(f"\n{len(failures)} failed" if failures else "\nall project checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
