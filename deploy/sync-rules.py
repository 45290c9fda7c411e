#!/usr/bin/env python3
"""Writes deploy/kubernetes/base/prometheusrule.yaml from the rule file
deploy/prometheus/popularity.rules.yml, the single source of the alert and
recording rules (docker-compose's Prometheus and promtool use the rule file,
the Prometheus Operator the PrometheusRule object).

    python3 deploy/sync-rules.py           # rewrite the PrometheusRule
    python3 deploy/sync-rules.py --check   # exit 1 if it is out of date

Standard library only; the rule file is copied as text (comments included),
indented under `spec:`.
"""
import pathlib
import sys

DEPLOY = pathlib.Path(__file__).resolve().parent
SOURCE = DEPLOY / "prometheus" / "popularity.rules.yml"
TARGET = DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/popularity.rules.yml by
# `python3 deploy/sync-rules.py`: edit the rule file, then run it.
# Your Prometheus may select rules by a label (for example
# release: kube-prometheus-stack): add it in your overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: popularity
  labels:
    app.kubernetes.io/name: popularity
spec:
"""


def render() -> str:
    lines = SOURCE.read_text().splitlines()
    # Skip the rule file's own header comment; keep everything from `groups:`.
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    return HEADER + body + "\n"


def main() -> int:
    text = render()
    if sys.argv[1:] == ["--check"]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python3 deploy/sync-rules.py", file=sys.stderr)
            return 1
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
