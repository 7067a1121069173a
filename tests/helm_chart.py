#!/usr/bin/env python3
"""The Helm side of tests/helm_chart.rs: renders and lints the chart with the official Helm
engine (PyPI helm-python-sdk binds Helm v4's Go SDK: no helm binary, no cluster, no network)
and validates manifests against the Kubernetes API schemas (PyPI kubernetes-validate, offline).

    helm_chart.py render CHART VALUES_FILE KUBE_VERSION [OVERRIDES_JSON]
        the rendered documents as a JSON list, each {"template", "doc"}
    helm_chart.py lint CHART VALUES_FILE
        Helm's lint report (strict) as JSON
    helm_chart.py validate KUBE_VERSION < documents.json
        {"errors": [...], "validated": [kind/name...], "no_schema": [kind...]}
    helm_chart.py deploy CHART VALUES_FILE
        the plain manifests of deploy/kubernetes/ as {"exporter.yml": text, ...}
    helm_chart.py versions
        the Kubernetes versions kubernetes-validate has schemas for, oldest first

Every failure exits non-zero with the reason on stderr.
"""

import json
import logging
import re
import sys

import helm_python
import kubernetes_validate.utils as kv
import yaml
from helm_python import _native

# Helm logs each symbolic link it follows (files/alerts.yml) at info: warnings and up only.
helm_python.enable_logging(logging.WARNING)

RELEASE = "atlas-cost-exporter"
NAMESPACE = "monitoring"
# The order the plain manifests list the resources in.
DEPLOY_ORDER = [
    "serviceaccount.yaml",
    "configmap.yaml",
    "service.yaml",
    "statefulset.yaml",
    "pdb.yaml",
    "networkpolicy.yaml",
    "servicemonitor.yaml",
]
DEPLOY_HEADER = """\
# GENERATED from charts/atlas-cost-exporter with deploy/kubernetes/values.yaml: do not edit.
# Change the chart or those values, then run
#   python3 tests/helm_chart.py deploy charts/atlas-cost-exporter deploy/kubernetes/values.yaml --write
# (tests/helm_chart.rs fails while this file and the chart's rendering differ).
#
"""
EXPORTER_HEADER = """\
# atlas-cost-exporter on Kubernetes without Helm: a StatefulSet of one shard with its state
# volume, its headless Service, a ServiceMonitor (Prometheus Operator; delete it without the
# operator), a PodDisruptionBudget and a NetworkPolicy. The alert rules are in
# prometheusrule.yml. Apply with `kubectl apply -n NAMESPACE -f exporter.yml`.
#
# Create the secret first (service account credentials; the secret half is mounted as a file):
#   kubectl create secret generic atlas-cost-exporter \\
#     --from-literal=client-id=mdb_sa_id_... --from-file=client-secret=./secret
# and put your orgs, queries and budgets in the ConfigMap's config.yml below (see docs/configuration.md).
"""
RULE_HEADER = """\
# The alert rules of deploy/alerts.yml as a PrometheusRule (Prometheus Operator): the chart
# reads deploy/alerts.yml itself (files/alerts.yml links to it), so the groups cannot drift.
"""
# Labels that say Helm manages a resource: not true of the plain manifests.
HELM_LABELS = re.compile(r"^\s+(helm\.sh/chart|app\.kubernetes\.io/managed-by): .*\n", re.M)


def deep_merge(base, over):
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def render_raw(chart_dir, values, kube_version):
    chart = helm_python.Chart.load(chart_dir)
    # Chart.render has no kube_version keyword; the C ABI's render options do (the
    # `--kube-version` of `helm template`), and .Capabilities follows it.
    opts = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": kube_version}
    return json.loads(
        _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    )


def load_values(path, overrides=None):
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    return deep_merge(values, overrides or {})


def render(chart_dir, values_file, kube_version, overrides):
    rendered = render_raw(chart_dir, load_values(values_file, overrides), kube_version)
    out = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append({"template": template.rsplit("/", 1)[-1], "doc": doc})
    return out


def lint(chart_dir, values_file):
    return helm_python.lint(chart_dir, load_values(values_file), strict=True)


def validate(kube_version, docs):
    errors, validated, no_schema = [], [], []
    for item in docs:
        doc = item["doc"]
        name = "%s/%s" % (doc.get("kind"), doc.get("metadata", {}).get("name"))
        try:
            kv.validate(doc, kube_version, strict=True)
            validated.append(name)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append("%s (%s): %s: %s" % (name, item["template"], path, e.message))
        except kv.SchemaNotFoundError:
            no_schema.append(doc.get("kind"))
    return {"errors": errors, "validated": validated, "no_schema": no_schema}


def deploy(chart_dir, values_file):
    rendered = render_raw(chart_dir, load_values(values_file), "v1.37.0")
    by_name = {t.rsplit("/", 1)[-1]: text for t, text in rendered.items()}

    def clean(text):
        text = HELM_LABELS.sub("", text)
        lines = [line.rstrip() for line in text.strip("\n").split("\n")]
        # Blank lines left where templates rendered nothing.
        kept = []
        for line in lines:
            if line == "" and (not kept or kept[-1] == ""):
                continue
            kept.append(line)
        return "\n".join(kept).strip("\n")

    docs = []
    for name in DEPLOY_ORDER:
        text = clean(by_name.get(name, ""))
        for part in re.split(r"^---$", text, flags=re.M):
            part = part.strip("\n")
            if part.strip():
                docs.append(part)
    exporter = DEPLOY_HEADER + EXPORTER_HEADER + "---\n" + "\n---\n".join(docs) + "\n"
    rule = DEPLOY_HEADER + RULE_HEADER + clean(by_name["prometheusrule.yaml"]) + "\n"
    return {"exporter.yml": exporter, "prometheusrule.yml": rule}


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "render":
        overrides = json.loads(argv[5]) if len(argv) > 5 else {}
        result = render(argv[2], argv[3], argv[4], overrides)
    elif cmd == "lint":
        result = lint(argv[2], argv[3])
    elif cmd == "validate":
        result = validate(argv[2], json.load(sys.stdin))
    elif cmd == "deploy":
        result = deploy(argv[2], argv[3])
        if "--write" in argv:
            for name, text in result.items():
                with open("deploy/kubernetes/" + name, "w") as f:
                    f.write(text)
    elif cmd == "versions":
        result = kv.all_versions()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except helm_python.HelmError as e:
        print("helm: %s" % e, file=sys.stderr)
        sys.exit(1)
