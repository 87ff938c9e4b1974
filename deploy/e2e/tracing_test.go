package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestComposeTracing brings the cluster up with the tracing profile and its
// override file, the way docs/DEPLOY.md documents it, runs `client tour` with
// --otlp-endpoint jaeger:4317, and finds the tour's trace through Jaeger's
// query API: one trace under the client's "client tour" span, with the
// spans of the client's calls, the nodes' spans of the same calls as their
// children, and a RouteChat's etcd Txn under the node's RouteChat span.
// Then `down -v` must leave nothing behind.
func TestComposeTracing(t *testing.T) {
	requireDocker(t)
	c := newCluster(t, fmt.Sprintf("routeguide-tracing-e2e-%d", os.Getpid()), "docker-compose.yml", "docker-compose.tracing.yml")
	jaegerPort := freePort(t)
	jaeger := fmt.Sprintf("http://127.0.0.1:%d", jaegerPort)
	// In the environment rather than --profile, so that the cleanup's
	// `down` removes Jaeger too.
	c.env = append(c.env, "COMPOSE_PROFILES=tracing", "ROUTEGUIDE_JAEGER_PORT="+strconv.Itoa(jaegerPort))
	t.Logf("Jaeger's query API on %s", jaeger)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := runQuiet(time.Minute, c.env, c.args("logs", "--no-color", "--tail=60", "jaeger")...)
			t.Logf("jaeger's logs (last 60 lines):\n%s", out)
		}
	})
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	var nodes []node

	step("up with 2 nodes and Jaeger", func(t *testing.T) {
		start := time.Now()
		nodes = c.up(t, 2)
		poll(t, time.Minute, "Jaeger's query API answers", func() (bool, string) {
			_, err := jaegerGet[[]string](jaeger + "/api/services")
			return err == nil, fmt.Sprint(err)
		})
		c.logf(t, "tracing: up with 2 nodes and Jaeger: %v from `up` to the nodes registered and Jaeger answering", since(start))
	})

	step("the tour's trace in Jaeger", func(t *testing.T) {
		start := time.Now()
		c.compose(t, 2*time.Minute, "run", "--rm", "-T", "client", "--otlp-endpoint", "jaeger:4317", "tour")
		toured := time.Now()
		c.logf(t, "tracing: `run --rm client tour` took %v", toured.Sub(start).Round(10*time.Millisecond))
		var tr jaegerTrace
		poll(t, time.Minute, "the tour's trace with the nodes' spans in Jaeger", func() (bool, string) {
			traces, err := jaegerGet[[]jaegerTrace](jaeger + "/api/traces?limit=20&service=routeguide-client&operation=" + url.QueryEscape("client tour"))
			if err != nil {
				return false, err.Error()
			}
			if len(traces) != 1 {
				return false, fmt.Sprintf("%d traces of a tour", len(traces))
			}
			tr = traces[0]
			// Each node exports its spans in batches of its own: wait for
			// every RPC's node span, not for the first node's batch.
			missing := slices.DeleteFunc(slices.Clone(tourRPCs), func(m string) bool {
				return tr.find("routeguide-node", "routeguide.RouteGuide/"+m) != nil
			})
			return len(missing) == 0 && tr.find("routeguide-node", "etcdserverpb.KV/Txn") != nil,
				fmt.Sprintf("spans by service: %v; no node span yet of %v", tr.countByService(), missing)
		})
		c.logf(t, "tracing: the tour's trace %s in Jaeger %v after the client exited, with spans by service %v",
			tr.TraceID, since(toured), tr.countByService())
		tr.check(t, ids(nodes))
	})

	step("down leaves nothing", c.downLeavesNothing)
}

// jaegerGet asks Jaeger's query API (the one its UI uses) for data.
func jaegerGet[T any](u string) (T, error) {
	var body struct {
		Data   T `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return body.Data, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return body.Data, fmt.Errorf("GET %s: HTTP %s: %w", u, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || len(body.Errors) > 0 {
		return body.Data, fmt.Errorf("GET %s: HTTP %s: %v", u, resp.Status, body.Errors)
	}
	return body.Data, nil
}

// jaegerTrace is a trace as Jaeger's query API returns it.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		ProcessID string      `json:"processID"`
		Tags      []jaegerTag `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string      `json:"serviceName"`
		Tags        []jaegerTag `json:"tags"`
	} `json:"processes"`
}

type jaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// span is one span of the trace, flattened.
type span struct {
	id, parent, name, service, instance, kind string
}

func (tr jaegerTrace) spans() []span {
	var out []span
	for _, s := range tr.Spans {
		sp := span{id: s.SpanID, name: s.OperationName, service: tr.Processes[s.ProcessID].ServiceName}
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" {
				sp.parent = ref.SpanID
			}
		}
		for _, tag := range tr.Processes[s.ProcessID].Tags {
			if tag.Key == "service.instance.id" {
				sp.instance = fmt.Sprint(tag.Value)
			}
		}
		for _, tag := range s.Tags {
			if tag.Key == "span.kind" {
				sp.kind = fmt.Sprint(tag.Value)
			}
		}
		out = append(out, sp)
	}
	return out
}

func (tr jaegerTrace) countByService() map[string]int {
	counts := map[string]int{}
	for _, s := range tr.spans() {
		counts[s.service]++
	}
	return counts
}

func (tr jaegerTrace) find(service, name string) *span {
	for _, s := range tr.spans() {
		if s.service == service && s.name == name {
			return &s
		}
	}
	return nil
}

// tourRPCs are the methods `client tour` calls, each of which the trace
// must show served by a node.
var tourRPCs = []string{"GetFeature", "ListFeatures", "RecordRoute", "RouteChat"}

// check asserts the shape of a tour's trace: every node span is the child
// of the client's span of the same call, from one of the nodes, and every
// etcd Txn is the child of a node's RouteChat span.
func (tr jaegerTrace) check(t *testing.T, nodes []string) {
	t.Helper()
	byID := map[string]span{}
	for _, s := range tr.spans() {
		byID[s.id] = s
	}
	var methods []string
	for _, s := range byID {
		parent, hasParent := byID[s.parent]
		switch {
		case s.service == "routeguide-client" && s.name == "client tour":
			if s.parent != "" {
				t.Errorf("the tour's span has a parent, %s", s.parent)
			}
		case s.service == "routeguide-client":
			if !hasParent || parent.name != "client tour" || s.kind != "client" {
				t.Errorf("client span %+v is not a client span under the tour's", s)
			}
		case s.name == "etcdserverpb.KV/Txn":
			if !hasParent || parent.name != "routeguide.RouteGuide/RouteChat" || parent.service != "routeguide-node" {
				t.Errorf("etcd Txn %+v is not under a node's RouteChat span (parent %+v)", s, parent)
			}
		case s.service == "routeguide-node" && strings.HasPrefix(s.name, "routeguide.RouteGuide/"):
			if !hasParent || parent.service != "routeguide-client" || parent.name != s.name || s.kind != "server" {
				t.Errorf("node span %+v is not a server span under the client's span of the call (parent %+v)", s, parent)
			}
			if !slices.Contains(nodes, s.instance) {
				t.Errorf("node span %+v: service.instance.id %q is none of the nodes %v", s, s.instance, nodes)
			}
			methods = append(methods, s.name)
		}
	}
	for _, m := range tourRPCs {
		if !slices.Contains(methods, "routeguide.RouteGuide/"+m) {
			t.Errorf("no node span of %s in the tour's trace (it has %v)", m, methods)
		}
	}
}
