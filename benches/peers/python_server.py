#!/usr/bin/env python3
"""A prometheus_client peer for benches/scrape.sh: serves the series of a JSON file (made by
series_from_exposition.py) from a custom collector that yields GaugeMetricFamily on every
scrape, with the library's built-in threaded HTTP server (which gzips when asked).

Usage: python_server.py series.json PORT
"""
import json
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class SeriesCollector(Collector):
    def __init__(self, families):
        self.families = families

    def collect(self):
        for f in self.families:
            g = GaugeMetricFamily(f["name"], f["help"], labels=f["labels"])
            for labels, value in zip(f["samples"], f["values"]):
                g.add_metric(labels, value)
            yield g


def main(path, port):
    with open(path, encoding="utf-8") as fh:
        families = json.load(fh)
    # A registry of its own: only the series, not the process and GC collectors.
    registry = CollectorRegistry()
    registry.register(SeriesCollector(families))
    start_http_server(int(port), addr="127.0.0.1", registry=registry)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
