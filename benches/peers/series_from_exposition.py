#!/usr/bin/env python3
"""Reads one text 0.0.4 scrape of the exporter and writes the gauge families it holds as JSON,
for the client_golang and prometheus_client peers of benches/scrape.sh:

    [{"name": ..., "help": ..., "labels": [names], "samples": [[values]], "values": [floats]}]

Only gauge families are kept (the cost series and the query state); the exporter's own counters
and histograms are a few kilobytes and would change type in a const-metric peer.
Usage: series_from_exposition.py scrape.txt series.json
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main(src, dst):
    with open(src, encoding="utf-8") as f:
        text = f.read()
    families = []
    series = 0
    for fam in text_string_to_metric_families(text):
        if fam.type != "gauge" or not fam.samples:
            continue
        labels = list(fam.samples[0].labels.keys())
        samples, values = [], []
        for s in fam.samples:
            if list(s.labels.keys()) != labels:
                raise SystemExit(f"{fam.name}: samples with different label names")
            samples.append([s.labels[k] for k in labels])
            values.append(s.value)
        series += len(samples)
        families.append(
            {"name": fam.name, "help": fam.documentation, "labels": labels,
             "samples": samples, "values": values}
        )
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(families, f, ensure_ascii=False)
    print(f"{dst}: {len(families)} gauge families, {series} series", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
