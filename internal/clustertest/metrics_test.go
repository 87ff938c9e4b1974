package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// httpClient reads the nodes' metrics listeners. Without keep-alive it
// leaves no connection, and so no goroutine, behind a request.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// metricsTemplate is nodetest.Config with every node's metrics listener on a
// free port.
func metricsTemplate(t *testing.T) node.Config {
	cfg := nodetest.Config(t)
	cfg.MetricsListen = "127.0.0.1:0"
	return cfg
}

// fetch GETs url and returns the response with its body read.
func fetch(ctx context.Context, url string, header http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// statusOf is the status code of GET path on the metrics listener at addr.
func statusOf(t *testing.T, addr, path string) int {
	t.Helper()
	resp, _, err := fetch(t.Context(), "http://"+addr+path, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode
}

// scrape fetches /metrics from addr, in the text format, and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body, err := fetch(t.Context(), "http://"+addr+"/metrics", http.Header{"Accept": {string(expfmt.NewFormat(expfmt.TypeTextPlain))}})
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", addr, resp.Status)
	}
	if expfmt.ResponseFormat(resp.Header).FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("scrape %s: asked for the text format, got Content-Type %q", addr, resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", addr, err)
	}
	return families
}

// value is the value of the only series of the counter or gauge name, or NaN
// when there is none. The registration metrics have no labels.
func value(families map[string]*dto.MetricFamily, name string) float64 {
	metrics := families[name].GetMetric()
	if len(metrics) != 1 {
		return math.NaN()
	}
	if c := metrics[0].GetCounter(); c != nil {
		return c.GetValue()
	}
	return metrics[0].GetGauge().GetValue()
}

// registration is what a node's /metrics says of its registration.
type registration struct {
	registered, registrations, failures float64
	lastKeepAlive                       time.Time
}

func registrationOf(t *testing.T, addr string) registration {
	t.Helper()
	f := scrape(t, addr)
	sec, frac := math.Modf(value(f, "routeguide_lease_last_keepalive_timestamp_seconds"))
	return registration{
		registered:    value(f, "routeguide_registered"),
		registrations: value(f, "routeguide_registrations_total"),
		failures:      value(f, "routeguide_lease_keepalive_failures_total"),
		lastKeepAlive: time.Unix(int64(sec), int64(frac*1e9)),
	}
}

// TestRegisteredFollowsEtcdAwayAndBack stops etcd for longer than the lease
// TTL and starts it again on the same data and address: the node's
// routeguide_registered and /readyz follow, and the counters count one loss
// and one registration more.
func TestRegisteredFollowsEtcdAwayAndBack(t *testing.T) {
	template := metricsTemplate(t)
	template.LeaseTTL = 2 * time.Second
	cluster := nodetest.StartCluster(t, 1, template)
	addr := cluster.Nodes()[0].MetricsAddr()

	reg := registrationOf(t, addr)
	if reg.registered != 1 || reg.registrations != 1 || reg.failures != 0 {
		t.Fatalf("once started: registered=%v registrations_total=%v keepalive_failures_total=%v, want 1, 1, 0", reg.registered, reg.registrations, reg.failures)
	}
	// The first keepalive goes out within half a second of the grant.
	poll.Until(t, 5*time.Second, "a keepalive response", func() bool {
		return time.Since(registrationOf(t, addr).lastKeepAlive) < template.LeaseTTL
	})
	if code := statusOf(t, addr, "/readyz"); code != http.StatusOK {
		t.Errorf("registered, /readyz = %d, want 200", code)
	}

	// etcd's Close waits for its clients to go, about 7s with a node connected.
	start := time.Now()
	cluster.Etcd().Close()
	t.Logf("etcd stopped in %v", time.Since(start).Round(time.Millisecond))
	poll.Until(t, 10*time.Second, "routeguide_registered 0 and a keepalive failure", func() bool {
		reg = registrationOf(t, addr)
		return reg.registered == 0 && reg.failures >= 1
	})
	lost := time.Since(start)
	if code := statusOf(t, addr, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("unregistered, /readyz = %d, want 503", code)
	}
	if code := statusOf(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("unregistered, /healthz = %d, want 200", code)
	}

	restart := time.Now()
	if err := cluster.RestartEtcd(); err != nil {
		t.Fatal(err)
	}
	// A scrape gathers the gauge and the counter separately, so one scrape
	// may see the one updated and not yet the other: wait for both.
	poll.Until(t, 15*time.Second, "routeguide_registered 1 and registrations_total 2", func() bool {
		reg = registrationOf(t, addr)
		return reg.registered == 1 && reg.registrations == 2
	})
	back := time.Since(restart)
	if reg.failures != 1 {
		t.Errorf("after etcd's return: keepalive_failures_total=%v, want 1", reg.failures)
	}
	if code := statusOf(t, addr, "/readyz"); code != http.StatusOK {
		t.Errorf("registered again, /readyz = %d, want 200", code)
	}
	poll.Until(t, 5*time.Second, "a keepalive response after etcd's return", func() bool {
		return registrationOf(t, addr).lastKeepAlive.After(restart)
	})
	t.Logf("unregistered %v after etcd began to stop; registered again %v after it restarted", lost.Round(time.Millisecond), back.Round(time.Millisecond))
}

// sdGroup is one target group of Prometheus's HTTP service discovery format.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// readSD returns what GET /sd on addr answers, checking the status and the
// Content-Type that Prometheus requires.
func readSD(ctx context.Context, addr string) ([]sdGroup, error) {
	resp, body, err := fetch(ctx, "http://"+addr+"/sd", nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /sd: %s: %s", resp.Status, body)
	}
	if mediaType, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mediaType != "application/json" {
		return nil, fmt.Errorf("GET /sd: Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
	}
	var groups []sdGroup
	if err := json.Unmarshal(body, &groups); err != nil {
		return nil, fmt.Errorf("GET /sd: %w: %s", err, body)
	}
	return groups, nil
}

// sdOf is the /sd answer that lists nodes, in key order as /sd lists them.
func sdOf(service string, nodes []*node.Node) []sdGroup {
	groups := []sdGroup{}
	for _, n := range nodes {
		groups = append(groups, sdGroup{Targets: []string{n.MetricsAddr()}, Labels: map[string]string{"node_id": n.ID(), "service": service}})
	}
	slices.SortFunc(groups, func(a, b sdGroup) int { return strings.Compare(a.Labels["node_id"], b.Labels["node_id"]) })
	return groups
}

// waitSD polls /sd on addr until it lists exactly nodes.
func waitSD(t *testing.T, addr, service string, nodes []*node.Node) {
	t.Helper()
	want := sdOf(service, nodes)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := readSD(t.Context(), addr)
		if err == nil && equalSD(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, /sd answers %+v (error %v), want %+v", got, err, want)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func equalSD(a, b []sdGroup) bool {
	return slices.EqualFunc(a, b, func(x, y sdGroup) bool {
		return slices.Equal(x.Targets, y.Targets) && len(x.Labels) == len(y.Labels) &&
			x.Labels["node_id"] == y.Labels["node_id"] && x.Labels["service"] == y.Labels["service"]
	})
}

// TestSDFollowsRegistrationsAndDeletions reads one node's /sd as a cluster
// grows and shrinks, with a malformed value in the registry.
func TestSDFollowsRegistrationsAndDeletions(t *testing.T) {
	template := metricsTemplate(t)
	cluster := nodetest.StartCluster(t, 2, template)
	addr := cluster.Nodes()[0].MetricsAddr()
	waitSD(t, addr, template.Service, cluster.Nodes())

	// A malformed value under the service's prefix is skipped, not fatal.
	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{cluster.EtcdURL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Under a lease, as a node's key, or it would be skipped for want of one.
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, discovery.Prefix(template.Service)+"x", "{not json", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}

	// The registry view handles events in order: once the new node is
	// listed, the malformed value has been read too.
	third, err := cluster.StartNode(ctx, template)
	if err != nil {
		t.Fatal(err)
	}
	waitSD(t, addr, template.Service, cluster.Nodes())
	if got := len(cluster.Nodes()); got != 3 {
		t.Fatalf("%d nodes run, want 3", got)
	}

	if err := cluster.StopNode(third); err != nil {
		t.Fatal(err)
	}
	if err := cluster.StopNode(cluster.Nodes()[1]); err != nil {
		t.Fatal(err)
	}
	waitSD(t, addr, template.Service, cluster.Nodes())
	if got := len(cluster.Nodes()); got != 1 {
		t.Fatalf("%d nodes run, want 1", got)
	}
}
