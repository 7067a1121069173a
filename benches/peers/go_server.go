// A client_golang peer for benches/scrape.sh: serves the series of a JSON file (made by
// series_from_exposition.py) as const gauges built by a custom collector on every scrape, the
// idiomatic way to export remote state. promhttp.HandlerFor gzips when the scraper accepts it.
//
// Usage: go_server -series series.json -listen 127.0.0.1:9101
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type family struct {
	Name    string     `json:"name"`
	Help    string     `json:"help"`
	Labels  []string   `json:"labels"`
	Samples [][]string `json:"samples"` // label values, in Labels order
	Values  []float64  `json:"values"`
	desc    *prometheus.Desc
}

type collector struct{ families []family }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for i := range c.families {
		ch <- c.families[i].desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for i := range c.families {
		f := &c.families[i]
		for j, lv := range f.Samples {
			ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, f.Values[j], lv...)
		}
	}
}

func main() {
	path := flag.String("series", "series.json", "series file")
	listen := flag.String("listen", "127.0.0.1:9101", "listen address")
	flag.Parse()
	raw, err := os.ReadFile(*path)
	if err != nil {
		log.Fatal(err)
	}
	var families []family
	if err := json.Unmarshal(raw, &families); err != nil {
		log.Fatal(err)
	}
	raw = nil
	for i := range families {
		families[i].desc = prometheus.NewDesc(families[i].Name, families[i].Help, families[i].Labels, nil)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{families: families})
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	log.Fatal(http.ListenAndServe(*listen, nil))
}
