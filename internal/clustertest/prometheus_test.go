package clustertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// prometheus is a Prometheus server that a test runs.
type prometheus struct {
	url    string // http://127.0.0.1:port
	output *testutils.SyncBuffer
	exited chan struct{} // closed once the process has exited
	err    error         // what Wait returned, once exited is closed
}

// startPrometheus runs Prometheus with config on a free port, waits until it
// is ready, and stops it when the test ends. The port is found by listening
// on port 0 and closing the listener just before the start; if another
// process takes it in between, it starts once more on another port.
func startPrometheus(t *testing.T, bin, config string) *prometheus {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := launchPrometheus(t, bin, config)
		if err == nil {
			return p
		}
		if attempt == 1 && strings.Contains(p.output.String(), "address already in use") {
			t.Logf("the free port was taken before Prometheus could listen; trying another")
			continue
		}
		t.Fatalf("%v; its output:\n%s", err, p.output)
	}
}

func launchPrometheus(t *testing.T, bin, config string) (*prometheus, error) {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := listener.Addr().String()
	listener.Close()
	p := &prometheus{url: "http://" + addr, output: new(testutils.SyncBuffer), exited: make(chan struct{})}
	cmd := exec.Command(bin,
		"--config.file="+config,
		"--storage.tsdb.path="+t.TempDir(),
		"--web.listen-address="+addr,
		"--log.level=warn",
		"--storage.tsdb.retention.time=1h",
	)
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(10 * time.Second)
		defer timer.Stop()
		select {
		case <-p.exited:
		case <-timer.C:
			t.Errorf("Prometheus still running 10s after SIGTERM; killing it")
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("Prometheus's output:\n%s", p.output)
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.exited:
			return p, fmt.Errorf("prometheus exited before it was ready: %v", p.err)
		default:
		}
		if resp, _, err := fetch(t.Context(), p.url+"/-/ready", nil); err == nil && resp.StatusCode == http.StatusOK {
			return p, nil
		}
		if time.Now().After(deadline) {
			return p, errors.New("prometheus not ready after 20s")
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// sample is one series of an instant vector from Prometheus's query API.
type sample struct {
	labels map[string]string
	value  float64
}

// query evaluates expr now through Prometheus's HTTP API.
func (p *prometheus) query(t *testing.T, expr string) ([]sample, error) {
	t.Helper()
	resp, body, err := fetch(t.Context(), p.url+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return nil, err
	}
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("query %s: %s: %w: %s", expr, resp.Status, err, body)
	}
	if answer.Status != "success" || answer.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: %s: status %q, result type %q, error %q", expr, resp.Status, answer.Status, answer.Data.ResultType, answer.Error)
	}
	var samples []sample
	for _, r := range answer.Data.Result {
		text, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", expr, r.Value, err)
		}
		samples = append(samples, sample{labels: r.Metric, value: v})
	}
	return samples, nil
}

// TestPrometheusFindsAndScrapesEveryNode runs Debian's Prometheus against a
// cluster of three, with http_sd_configs pointed at one node's /sd, as
// docs/OPERATIONS.md tells operators to: every node must be up, labelled with its node
// id, and the GetFeature calls a client made must arrive.
func TestPrometheusFindsAndScrapesEveryNode(t *testing.T) {
	bin := testutils.PrometheusBinary(t, "prometheus")
	template := metricsTemplate(t)
	cluster := nodetest.StartCluster(t, 3, template)
	nodes := cluster.Nodes()

	// The rules the compose Prometheus loads, evaluated on real nodes.
	rules, err := filepath.Abs("../../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "prometheus.yml")
	err = os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: routeguide
    http_sd_configs:
      - url: http://%s/sd
        refresh_interval: 1s
`, rules, nodes[0].MetricsAddr())), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	prom := startPrometheus(t, bin, config)
	ready := time.Since(start)

	const calls = 300
	res, err := load.Run(t.Context(), dial(t, cluster), load.Config{RPC: load.Get, Concurrency: 4, Requests: calls, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != calls {
		t.Fatalf("load: ok=%d failed=%d %v, want %d calls OK", res.OK, res.Failed, res.Errors, calls)
	}

	want := map[string]string{} // metrics address → node id
	for _, n := range nodes {
		want[n.MetricsAddr()] = n.ID()
	}
	var up []sample
	pollReporting(t, 20*time.Second, `up{job="routeguide"} == 1 for every node`, func() (bool, string) {
		up, err = prom.query(t, `up{job="routeguide"}`)
		if err != nil || len(up) != len(want) {
			return false, fmt.Sprintf("%v %v", up, err)
		}
		for _, s := range up {
			if s.value != 1 || want[s.labels["instance"]] == "" {
				return false, fmt.Sprintf("%v", up)
			}
		}
		return true, ""
	})
	allUp := time.Since(start)
	for _, s := range up {
		if id := want[s.labels["instance"]]; s.labels["node_id"] != id || s.labels["service"] != template.Service {
			t.Errorf("up%v: want node_id %q and service %q from /sd", s.labels, id, template.Service)
		}
	}

	// The sum reaches every call once each node has been scraped after the load.
	const handled = `sum(grpc_server_handled_total{grpc_method="GetFeature",job="routeguide"}) > 0`
	pollReporting(t, 10*time.Second, handled+" to count every call", func() (bool, string) {
		got, err := prom.query(t, handled)
		return err == nil && len(got) == 1 && got[0].value == calls, fmt.Sprintf("%v %v", got, err)
	})
	// The recording rules see calls made now that every node is scraped,
	// on every node, under the names the rules use.
	if _, err := load.Run(t.Context(), dial(t, cluster), load.Config{RPC: load.Get, Concurrency: 3, Requests: 30, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	const recorded = `count(sum by (node_id) (routeguide:grpc_server_handled:rate1m{grpc_method="GetFeature"}) > 0)`
	pollReporting(t, 10*time.Second, recorded+" to count every node", func() (bool, string) {
		got, err := prom.query(t, recorded)
		return err == nil && len(got) == 1 && got[0].value == float64(len(nodes)), fmt.Sprintf("%v %v", got, err)
	})
	t.Logf("Prometheus ready %v after start; every node up %v after start (scrape and SD refresh intervals 1s); load by_node %v",
		ready.Round(time.Millisecond), allUp.Round(time.Millisecond), res.ByNode)
}

// pollReporting calls cond every 100ms until it holds, and fails t after
// within with what cond last said.
func pollReporting(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	poll.UntilReported(t, within, 100*time.Millisecond, what, cond)
}
