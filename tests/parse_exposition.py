#!/usr/bin/env python3
"""Reads a Prometheus exposition on stdin with the official Python client's parsers and
prints its samples as JSON: [{"name", "labels", "value"}], or exits 1 naming the error.

Usage: parse_exposition.py text|openmetrics
"""
import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text


def main() -> int:
    fmt = sys.argv[1]
    body = sys.stdin.read()
    parse = parse_om if fmt == "openmetrics" else parse_text
    out = []
    try:
        for family in parse(body):
            for s in family.samples:
                v = s.value
                out.append({
                    "family": family.name,
                    "type": family.type,
                    "name": s.name,
                    "labels": s.labels,
                    "value": None if math.isnan(v) else v,
                })
    except Exception as e:  # noqa: BLE001 - any parse failure is the answer
        print(f"parse error: {e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
