package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteTable prints the rows as a markdown table, then for each kind of
// phase run both ways the ratios of streamgate to direct franz-go.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| phase | messages | msgs/s | MiB/s | p50 ms | p99 ms | p99.9 ms | gateway CPU us/msg | client CPU us/msg | broker CPU us/msg |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		res := r.Result
		p50, p99, p999 := "-", "-", "-"
		if res.Latency != nil && res.Latency.Count() > 0 {
			p50, p99, p999 = ms(res.Latency.Quantile(0.5)), ms(res.Latency.Quantile(0.99)), ms(res.Latency.Quantile(0.999))
		}
		gw := perMsg(r.Gateway, res.Messages)
		if r.Path == "direct" && r.Gateway >= 0 {
			gw = "- (idle " + gw + ")"
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %.1f | %s | %s | %s | %s | %s | %s |\n", r.Name, res.Messages,
			rate(res), float64(res.Bytes)/(1<<20)/res.Elapsed.Seconds(), p50, p99, p999,
			gw, perMsg(res.CPU, res.Messages), perMsg(r.Broker, res.Messages))
	}
	var lines []string
	for _, kind := range []string{"write", "read", "e2e"} {
		d, g, ok := pair(rows, kind)
		if !ok {
			continue
		}
		lines = append(lines, ratioLine(kind, d, g))
	}
	if len(lines) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "streamgate against direct franz-go, same broker, same run:")
		for _, l := range lines {
			fmt.Fprintln(w, "- "+l)
		}
	}
}

// pair finds the direct and the streamgate row of a kind.
func pair(rows []Row, kind string) (direct, gateway Row, ok bool) {
	var hasD, hasG bool
	for _, r := range rows {
		if r.Kind != kind {
			continue
		}
		if r.Path == "direct" {
			direct, hasD = r, true
		} else {
			gateway, hasG = r, true
		}
	}
	return direct, gateway, hasD && hasG
}

func ratioLine(kind string, d, g Row) string {
	name := map[string]string{"write": "publish", "read": "subscribe + ack", "e2e": "publish to delivery"}[kind]
	parts := []string{fmt.Sprintf("throughput %.2fx", rate(g.Result)/rate(d.Result))}
	dc := perMsgF(d.Result.CPU, d.Result.Messages)
	if g.Gateway >= 0 && dc > 0 {
		gc := perMsgF(g.Gateway, g.Result.Messages)
		parts = append(parts, fmt.Sprintf("gateway CPU per message %.2fx a direct client's", gc/dc),
			fmt.Sprintf("%.0f msgs/s per gateway core", 1e6/gc))
	}
	if dc > 0 {
		parts = append(parts, fmt.Sprintf("our client's CPU per message %.2fx", perMsgF(g.Result.CPU, g.Result.Messages)/dc))
	}
	if kind == "e2e" && d.Result.Latency != nil && g.Result.Latency != nil {
		for _, q := range []float64{0.5, 0.99, 0.999} {
			delta := g.Result.Latency.Quantile(q) - d.Result.Latency.Quantile(q)
			parts = append(parts, fmt.Sprintf("p%s %+.2f ms", strings.TrimSuffix(fmt.Sprintf("%g", q*100), ".0"), float64(delta)/float64(time.Millisecond)))
		}
	}
	return name + ": " + strings.Join(parts, ", ")
}

func rate(r Result) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Messages) / r.Elapsed.Seconds()
}

func perMsgF(d time.Duration, n int64) float64 {
	if n == 0 || d < 0 {
		return 0
	}
	return float64(d.Nanoseconds()) / 1e3 / float64(n)
}

func perMsg(d time.Duration, n int64) string {
	if d < 0 || n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", perMsgF(d, n))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }
