// Validates the Prometheus Operator's kinds among the manifests on stdin (a JSON array of
// {"doc": manifest, "template": where it came from}) against the operator's CRD schemas, as
// packaged by @kubernetes-models/prometheus-operator (types, patterns, enums, required
// fields; like the API server, not unknown fields, which it prunes). Prints
// {"errors": [...], "validated": ["Kind/name", ...], "other": ["Kind", ...]}, where "other"
// are the kinds it has no schema for; exits 0 (the caller asserts on the report).
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const kinds = {
  "monitoring.coreos.com/v1 PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
};
const report = { errors: [], validated: [], other: [] };
for (const { doc, template } of JSON.parse(readFileSync(0, "utf8"))) {
  const Model = kinds[`${doc.apiVersion} ${doc.kind}`];
  const name = `${doc.kind}/${doc.metadata?.name}`;
  if (!Model) {
    report.other.push(doc.kind);
    continue;
  }
  try {
    new Model(doc).validate();
    report.validated.push(name);
  } catch (e) {
    report.errors.push(`${name} (${template}): ${e.message}`);
  }
}
console.log(JSON.stringify(report));
