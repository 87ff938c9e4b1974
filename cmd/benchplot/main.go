// Command benchplot draws docs/BENCHMARKS.md's plot from the output of
// BenchmarkClusterGetFeature: throughput and p99 latency against concurrency,
// for one node dialled directly and three nodes through etcd:///. It reads
// `go test -bench` output on stdin, averages repeated runs (-count), and
// writes an SVG to stdout, with nothing but the standard library:
//
//	go test -run '^$' -bench ClusterGetFeature -benchtime 5000x -count 3 ./internal/clustertest/ |
//		go run ./cmd/benchplot > docs/cluster.svg
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// line matches one result of the plotted targets, nodes=1 and nodes=3: the
// sub-benchmark's concurrency and node count (then -GOMAXPROCS when it is
// not 1), then its metrics as value-unit pairs. The targets that break a
// ratio down (nodes=3/static, server=1/conns=3, ...) are not plotted.
var line = regexp.MustCompile(`^BenchmarkClusterGetFeature/concurrency=(\d+)/nodes=(\d+)(?:-\d+)?\s+\d+\s+(.*)$`)

type key struct{ concurrency, nodes int }

type sums struct {
	qps, p99 float64
	n        int
}

func main() {
	results, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
	if len(results) == 0 {
		fmt.Fprintln(os.Stderr, "benchplot: no BenchmarkClusterGetFeature results on stdin")
		os.Exit(1)
	}
	draw(os.Stdout, results)
}

func parse(r io.Reader) (map[key]*sums, error) {
	results := map[key]*sums{}
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		m := line.FindStringSubmatch(scanner.Text())
		if m == nil {
			continue
		}
		c, _ := strconv.Atoi(m[1])
		n, _ := strconv.Atoi(m[2])
		fields := strings.Fields(m[3])
		s := results[key{c, n}]
		if s == nil {
			s = &sums{}
			results[key{c, n}] = s
		}
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", scanner.Text(), err)
			}
			switch fields[i+1] {
			case "qps":
				s.qps += v
			case "p99-ms":
				s.p99 += v
			}
		}
		s.n++
	}
	return results, scanner.Err()
}

// Layout: two panels side by side, concurrency on a log2 axis.
const (
	width, height  = 880, 360
	panelW, panelH = 340, 250
	left1, left2   = 70, 510
	top            = 50
)

var colours = map[int]string{1: "#1f77b4", 3: "#d62728"}

func draw(w io.Writer, results map[key]*sums) {
	var concurrencies, nodes []int
	for k := range results {
		if !slices.Contains(concurrencies, k.concurrency) {
			concurrencies = append(concurrencies, k.concurrency)
		}
		if !slices.Contains(nodes, k.nodes) {
			nodes = append(nodes, k.nodes)
		}
	}
	slices.Sort(concurrencies)
	slices.Sort(nodes)
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(w, `<text x="%d" y="22" font-size="15">GetFeature through the client's load generator: 1 node direct vs 3 nodes via etcd:///routeguide</text>`+"\n", 70)
	panel(w, left1, "throughput (calls/s)", concurrencies, nodes, results, func(s *sums) float64 { return s.qps / float64(s.n) })
	panel(w, left2, "p99 latency (ms)", concurrencies, nodes, results, func(s *sums) float64 { return s.p99 / float64(s.n) })
	for i, n := range nodes {
		y := height - 14
		x := 300 + i*160
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%d node%s</text>`+"\n",
			x, y-4, x+24, y-4, colours[n], x+30, y, n, map[bool]string{true: "s", false: ""}[n > 1])
	}
	fmt.Fprintln(w, "</svg>")
}

func panel(w io.Writer, x0 int, title string, concurrencies, nodes []int, results map[key]*sums, value func(*sums) float64) {
	maxV := 0.0
	for _, s := range results {
		maxV = math.Max(maxV, value(s))
	}
	maxV = niceCeil(maxV)
	xOf := func(i int) float64 {
		if len(concurrencies) == 1 {
			return float64(x0)
		}
		return float64(x0) + float64(i)*panelW/float64(len(concurrencies)-1)
	}
	yOf := func(v float64) float64 { return top + panelH - v/maxV*panelH }
	fmt.Fprintf(w, `<text x="%d" y="%d" font-size="13">%s</text>`+"\n", x0, top-10, title)
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", x0, top, panelW, panelH)
	for t := 0; t <= 4; t++ {
		v := maxV * float64(t) / 4
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			x0, yOf(v), x0+panelW, yOf(v), x0-6, yOf(v)+4, strconv.FormatFloat(v, 'g', 4, 64))
	}
	for i, c := range concurrencies {
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", xOf(i), top+panelH+16, c)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">concurrency (calls in flight)</text>`+"\n", x0+panelW/2, top+panelH+32)
	for _, n := range nodes {
		var points []string
		for i, c := range concurrencies {
			if s := results[key{c, n}]; s != nil {
				points = append(points, fmt.Sprintf("%.1f,%.1f", xOf(i), yOf(value(s))))
			}
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(points, " "), colours[n])
		for _, p := range points {
			xy := strings.Split(p, ",")
			fmt.Fprintf(w, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], colours[n])
		}
	}
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
