package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// stages prints the stage timings the PEC processes logged for the transactions of a run
// (since its start): A's access point ("pec accepted": end-of-message and its scan, build and
// commit) and B's reception point for the bustas ("pec received": verify, scan, build, commit).
func (r *e2eRun) stages(since time.Time) {
	logStages("A access point", r.a.Logs["pec-milter"], since, func(e map[string]any) bool { return e["msg"] == "pec accepted" })
	logStages("B reception", r.b.Logs["pec-milter"], since, func(e map[string]any) bool {
		return e["msg"] == "pec received" && e["kind"] == "busta"
	})
}

// logStages reads the JSON log at path and prints percentiles of "duration" and of every
// "stages" member, over the entries after since that keep accepts.
func logStages(name, path string, since time.Time, keep func(map[string]any) bool) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Printf("       %s: %v\n", name, err)
		return
	}
	defer f.Close()
	vals := map[string][]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil || !keep(e) {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(e["time"])); err != nil || t.Before(since) {
			continue
		}
		if d, ok := e["duration"].(float64); ok {
			vals["total"] = append(vals["total"], time.Duration(d))
		}
		st, _ := e["stages"].(map[string]any)
		for k, v := range st {
			if x, ok := v.(float64); ok {
				vals[strings.TrimSuffix(k, "_ms")] = append(vals[strings.TrimSuffix(k, "_ms")], time.Duration(x*float64(time.Millisecond)))
			}
		}
	}
	var keys []string
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s %.1f/%.1f", k, ms(percentile(vals[k], .5)), ms(percentile(vals[k], .9)))
	}
	fmt.Printf("       %s (n %d), ms p50/p90:%s\n", name, len(vals["total"]), b.String())
}
