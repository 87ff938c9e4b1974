// Package e2e tests deploy/ on a real Docker: the images that
// deploy/build-images.sh builds and the cluster deploy/docker-compose.yml
// makes of them, scaled, cut and restarted under load; and the secured
// variant (docker-compose.tls.yml, brought up by deploy/tls/up.sh).
// TestCompose and TestComposeTLS run only with ROUTEGUIDE_E2E_DOCKER=1 and
// the images built; .ci/e2e-docker does both.
// TestPinnedVersionsAgree runs always.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/load"

	pollpkg "github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

const (
	service  = "routeguide" // the nodes' service name, their etcd prefix and Prometheus job
	etcdctl  = "/usr/local/bin/etcdctl"
	grpcPort = "50051"
)

// TestCompose brings the cluster up and takes it through scaling, an etcd
// member's loss and a rolling restart, asserting that no RPC fails, and then
// that `down -v` leaves nothing behind. It logs every figure it measures.
func TestCompose(t *testing.T) {
	requireDocker(t)
	c := newCluster(t, "routeguide-e2e", "docker-compose.yml")
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow() // every step builds on the one before
		}
	}
	var nodes []node

	step("up with 3 nodes", func(t *testing.T) {
		start := time.Now()
		nodes = c.up(t, 3)
		c.logf(t, "up with 3 nodes: %v from `up` to all 3 registered in etcd", since(start))
	})

	step("load spreads over 3 nodes", func(t *testing.T) {
		res := c.load(t, "--concurrency", "8", "--duration", "5s")
		c.logf(t, "load over 3 nodes: %s", summary(res))
		assertNoFailures(t, res)
		assertSpread(t, res, ids(nodes))
	})

	step("scale to 5", func(t *testing.T) {
		before := nodes
		c.compose(t, 3*time.Minute, "up", "-d", "--scale", "node=5")
		returned := time.Now()
		nodes = c.nodes(t, 5)
		added := newNodes(before, nodes)
		c.waitServing(t, "scale to 5", added, returned)

		c.prom.waitUp(t, ids(nodes), 2*time.Minute)
		c.logf(t, "scale to 5: Prometheus has up=1 for the 5 targets of job %s %v after `up` returned", service, since(returned))
	})

	step("Prometheus web UI renders", func(t *testing.T) {
		c.checkPrometheusUI(t, ids(nodes))
	})

	step("scale to 2 under load", func(t *testing.T) {
		bg := c.startLoad(t)
		c.prom.waitTraffic(t, ids(nodes))
		start := time.Now()
		c.compose(t, 3*time.Minute, "up", "-d", "--scale", "node=2")
		took := since(start)
		nodes = c.nodes(t, 2)
		// Every leaving node revoked its lease before it exited: nothing is
		// left for the lease TTL to clean up.
		if got := c.registered(t); !sameSet(got, ids(nodes)) {
			t.Errorf("keys in etcd right after scaling to 2: %v; want only the 2 remaining nodes %v", got, ids(nodes))
		}
		c.prom.waitTraffic(t, ids(nodes))
		res := bg.stop(t)
		c.logf(t, "scale 5->2 under load: `up --scale node=2` took %v; load: %s", took, summary(res))
		assertNoFailures(t, res)
	})

	step("etcd member down under load", func(t *testing.T) {
		bg := c.startLoad(t)
		c.prom.waitTraffic(t, ids(nodes))
		c.compose(t, time.Minute, "stop", "etcd2")
		c.prom.waitTraffic(t, ids(nodes))

		before := nodes
		c.compose(t, 3*time.Minute, "up", "-d", "--no-deps", "--scale", "node=3", "node")
		returned := time.Now()
		nodes = c.nodes(t, 3)
		c.waitServing(t, "etcd2 down, scale to 3", newNodes(before, nodes), returned)
		c.prom.waitTraffic(t, ids(nodes))
		res := bg.stop(t)
		c.logf(t, "etcd2 stopped under load: load: %s", summary(res))
		assertNoFailures(t, res)

		start := time.Now()
		c.compose(t, time.Minute, "start", "etcd2")
		c.waitHealthy(t, "etcd2", time.Minute)
		c.logf(t, "etcd2 started again: healthy %v after `start`", since(start))
	})

	step("rolling restart under load", func(t *testing.T) {
		bg := c.startLoad(t)
		c.prom.waitTraffic(t, ids(nodes))
		for _, n := range nodes {
			lease := c.registrations(t)[n.id]
			start := time.Now()
			docker(t, time.Minute, "restart", "-t", "15", n.container)
			restarted := since(start)
			c.waitReregistered(t, ids(nodes), n.id, lease, time.Minute)
			registered := since(start)
			c.prom.waitTraffic(t, []string{n.id})
			c.logf(t, "restart %s: `docker restart` %v, registered again after %v, taking traffic after %v",
				n.id, restarted, registered, since(start))
		}
		res := bg.stop(t)
		c.logf(t, "rolling restart of 3 nodes under load: load: %s", summary(res))
		assertNoFailures(t, res)
		assertSpread(t, res, ids(nodes))
	})

	step("down leaves nothing", c.downLeavesNothing)
}

// requireDocker skips a test that needs Docker and the images unless
// ROUTEGUIDE_E2E_DOCKER=1.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv("ROUTEGUIDE_E2E_DOCKER") != "1" {
		t.Skip("\n" + strings.Repeat("*", 72) + "\n" +
			"*** SKIPPED: the Docker end-to-end test runs only with ROUTEGUIDE_E2E_DOCKER=1\n" +
			"*** and the images built: run `bash .ci/e2e-docker`.\n" +
			strings.Repeat("*", 72))
	}
}

// cluster is one compose project of deploy/docker-compose.yml (and the
// overrides given), named for this test run and removed when the test ends.
type cluster struct {
	command []string // docker compose, or docker-compose
	files   []string // absolute paths, the base file first
	project string
	env     []string
	prom    prometheus
	etcd1   string   // etcd1's container, once looked up
	etcdctl []string // docker exec options for etcdctl in etcd1 (-e VAR=...)
	loads   int      // background loads started, for their container names
	running []string // background loads' containers not yet stopped
	figures []string
}

// newCluster is a project of the compose files given, relative to deploy/,
// named prefix and a suffix of its own: two runs at once, from two checkouts
// or two machines sharing a Docker daemon, never share containers, networks
// or volumes (and Prometheus publishes on a free port). A test may add to
// c.env before it starts anything.
func newCluster(t *testing.T, prefix string, files ...string) *cluster {
	project := fmt.Sprintf("%s-%d-%08x", prefix, os.Getpid(), rand.Uint32())
	command, picked, err := composeCommand()
	if err != nil {
		t.Fatal(err)
	}
	var abs []string
	for _, f := range files {
		path, err := filepath.Abs(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		abs = append(abs, path)
	}
	port := freePort(t)
	c := &cluster{
		command: command,
		files:   abs,
		project: project,
		env:     append(os.Environ(), "ROUTEGUIDE_PROMETHEUS_PORT="+strconv.Itoa(port)),
		prom:    prometheus(fmt.Sprintf("http://127.0.0.1:%d", port)),
	}
	t.Logf("compose: %s (deploy/compose), project %s, Prometheus on %s", picked, c.project, c.prom)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(t)
		}
		for _, name := range c.running {
			runQuiet(30*time.Second, nil, "docker", "rm", "-f", name)
		}
		if out, err := runQuiet(3*time.Minute, c.env, c.args("down", "-v", "--remove-orphans")...); err != nil {
			t.Errorf("cleanup: down -v: %v\n%s", err, out)
		}
		t.Log("figures:\n  " + strings.Join(c.figures, "\n  "))
	})
	return c
}

// composeCommand is the command that runs Compose, as the commands in
// docs/DEPLOY.md do: through deploy/compose, which picks $ROUTEGUIDE_COMPOSE, `docker
// compose` or docker-compose. It returns as well the one picked.
func composeCommand() (command []string, picked string, err error) {
	script, err := filepath.Abs("../compose")
	if err != nil {
		return nil, "", err
	}
	out, err := exec.Command("bash", script, "--which").CombinedOutput()
	if err != nil {
		return nil, "", fmt.Errorf("%s: %v", strings.TrimSpace(string(out)), err)
	}
	return []string{"bash", script}, strings.TrimSpace(string(out)), nil
}

// freePort is a port on 127.0.0.1 that nothing listens on now; 9090 may be
// taken on a developer's machine.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (c *cluster) logf(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	c.figures = append(c.figures, line)
	t.Log(line)
}

func (c *cluster) args(args ...string) []string {
	argv := slices.Clone(c.command)
	for _, f := range c.files {
		argv = append(argv, "-f", f)
	}
	return append(append(argv, "-p", c.project), args...)
}

// compose runs a compose command and returns its standard output.
func (c *cluster) compose(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := runQuiet(timeout, c.env, c.args(args...)...)
	if err != nil {
		t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func docker(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := runQuiet(timeout, nil, append([]string{"docker"}, args...)...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runQuiet runs a command with no input and returns its standard output; on
// failure the output is its standard error as well.
func runQuiet(timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timed out after %v)", err, timeout)
		}
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// node is one running replica of the node service.
type node struct {
	container string
	id        string // its node id: the container's hostname and the gRPC port
}

func ids(nodes []node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.id)
	}
	return out
}

func newNodes(before, after []node) []node {
	var added []node
	for _, n := range after {
		if !slices.Contains(ids(before), n.id) {
			added = append(added, n)
		}
	}
	return added
}

// nodes lists the running replicas of the node service; there must be want.
func (c *cluster) nodes(t *testing.T, want int) []node {
	t.Helper()
	var nodes []node
	for _, container := range strings.Fields(c.compose(t, time.Minute, "ps", "-q", "node")) {
		out := strings.Fields(docker(t, time.Minute, "inspect", "-f", "{{.State.Running}} {{.Config.Hostname}}", container))
		if len(out) == 2 && out[0] == "true" {
			nodes = append(nodes, node{container: container, id: out[1] + ":" + grpcPort})
		}
	}
	if len(nodes) != want {
		t.Fatalf("running node replicas: %d (%v); want %d", len(nodes), ids(nodes), want)
	}
	return nodes
}

// up brings the project up with n nodes, and returns them once all n are
// registered in etcd.
func (c *cluster) up(t *testing.T, n int) []node {
	t.Helper()
	c.compose(t, 5*time.Minute, "up", "-d", "--scale", fmt.Sprintf("node=%d", n))
	nodes := c.nodes(t, n)
	c.waitRegistered(t, ids(nodes), time.Minute)
	return nodes
}

// registrations maps each node id registered in etcd to the lease its key
// is under, read through etcd1 with docker exec (quicker to poll than
// compose exec), with the options in c.etcdctl.
func (c *cluster) registrations(t *testing.T) map[string]int64 {
	t.Helper()
	if c.etcd1 == "" {
		c.etcd1 = strings.TrimSpace(c.compose(t, time.Minute, "ps", "-q", "etcd1"))
	}
	args := slices.Concat([]string{"exec"}, c.etcdctl, []string{c.etcd1, etcdctl, "get", "--prefix", service + "/", "-w", "json"})
	out := docker(t, time.Minute, args...)
	var resp struct {
		KVs []struct {
			Key   []byte `json:"key"`
			Lease int64  `json:"lease"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("etcdctl get: %v\n%s", err, out)
	}
	regs := map[string]int64{}
	for _, kv := range resp.KVs {
		regs[strings.TrimPrefix(string(kv.Key), service+"/")] = kv.Lease
	}
	return regs
}

// registered lists the node ids registered in etcd.
func (c *cluster) registered(t *testing.T) []string {
	t.Helper()
	return slices.Collect(maps.Keys(c.registrations(t)))
}

// waitRegistered polls until exactly want are registered.
func (c *cluster) waitRegistered(t *testing.T, want []string, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, fmt.Sprintf("registry = %v", want), func() (bool, string) {
		got := c.registered(t)
		return sameSet(got, want), fmt.Sprintf("registered: %v", got)
	})
}

// waitReregistered polls until exactly want are registered and id is under
// a lease other than old: the node registered again.
func (c *cluster) waitReregistered(t *testing.T, want []string, id string, old int64, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, fmt.Sprintf("%s registered under a new lease, and registry = %v", id, want), func() (bool, string) {
		regs := c.registrations(t)
		lease, ok := regs[id]
		return sameSet(slices.Collect(maps.Keys(regs)), want) && ok && lease != old,
			fmt.Sprintf("registered: %x", regs)
	})
}

// waitHealthy polls until Docker reports every container of the service
// healthy.
func (c *cluster) waitHealthy(t *testing.T, svc string, timeout time.Duration) {
	t.Helper()
	containers := strings.Fields(c.compose(t, time.Minute, "ps", "-q", svc))
	if len(containers) == 0 {
		t.Fatalf("service %s has no container", svc)
	}
	poll(t, timeout, svc+" healthy", func() (bool, string) {
		args := append([]string{"inspect", "-f", "{{.State.Health.Status}}"}, containers...)
		status := strings.Fields(docker(t, time.Minute, args...))
		healthy := len(status) == len(containers)
		for _, s := range status {
			healthy = healthy && s == "healthy"
		}
		return healthy, "health: " + strings.Join(status, " ")
	})
}

// load runs the client in the compose network, GetFeature with the flags
// given, and returns its summary. A run whose RPCs failed (exit status 1)
// still returns its summary; any other failure is fatal.
func (c *cluster) load(t *testing.T, flags ...string) load.Result {
	t.Helper()
	res, _, _ := c.loadWith(t, nil, flags...)
	return res
}

// loadWith is load with options for `run` before the service name (such as
// -e VAR=VALUE), and returns as well the client's output and how it exited.
func (c *cluster) loadWith(t *testing.T, runOpts []string, flags ...string) (res load.Result, out string, err error) {
	t.Helper()
	args := slices.Concat([]string{"run", "--rm", "-T"}, runOpts, []string{"client", "--json", "load", "--rpc", "get"}, flags)
	out, err = runQuiet(2*time.Minute, c.env, c.args(args...)...)
	res, parseErr := parseResult(out)
	if parseErr != nil {
		t.Fatalf("compose %s: %v; %v\n%s", strings.Join(args, " "), err, parseErr, out)
	}
	return res, out, err
}

// parseResult reads the client's JSON summary: the last line that is an object.
func parseResult(out string) (load.Result, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if line := strings.TrimSpace(lines[i]); strings.HasPrefix(line, "{") {
			var res load.Result
			err := json.Unmarshal([]byte(line), &res)
			return res, err
		}
	}
	return load.Result{}, errors.New("no JSON summary in the output")
}

// bgLoad is a client load running in the background, in a container of its
// own name, until stop interrupts it.
type bgLoad struct {
	name      string
	forget    func() // called once it is stopped: its owner need not remove it
	started   time.Time
	done      chan struct{}
	out       string
	err       error
	finishedT time.Time
}

// backgroundLoadLimit bounds a background load that nobody stops.
const backgroundLoadLimit = "5m"

// loadFlags are the client's flags for a background load.
var loadFlags = []string{"--json", "load", "--rpc", "get", "--concurrency", "8", "--duration", backgroundLoadLimit}

func (c *cluster) startLoad(t *testing.T) *bgLoad {
	t.Helper()
	c.loads++
	name := fmt.Sprintf("%s-load-%d", c.project, c.loads)
	c.running = append(c.running, name)
	b := startBackgroundLoad(t, name, c.env, c.args(append([]string{"run", "--rm", "-T", "--name", name, "client"}, loadFlags...)...))
	b.forget = func() { c.running = slices.DeleteFunc(c.running, func(s string) bool { return s == name }) }
	return b
}

// startBackgroundLoad runs argv, which starts the client in a container
// named name, and returns once that container runs.
func startBackgroundLoad(t *testing.T, name string, env, argv []string) *bgLoad {
	t.Helper()
	b := &bgLoad{name: name, forget: func() {}, started: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.out, b.err = runQuiet(10*time.Minute, env, argv...)
		b.finishedT = time.Now()
	}()
	poll(t, time.Minute, "background load container "+b.name+" running", func() (bool, string) {
		select {
		case <-b.done:
			t.Fatalf("background load ended before it was running: %v\n%s", b.err, b.out)
		default:
		}
		out, err := runQuiet(time.Minute, nil, "docker", "inspect", "-f", "{{.State.Running}}", b.name)
		return err == nil && strings.TrimSpace(out) == "true", strings.TrimSpace(out)
	})
	return b
}

// stop interrupts the load, which then prints its summary, and returns it.
// The load must still have been running: a load that ended by itself did not
// cover the whole step.
func (b *bgLoad) stop(t *testing.T) load.Result {
	t.Helper()
	select {
	case <-b.done:
		t.Fatalf("background load %s ended by itself after %v, before the step did: %v\n%s", b.name, b.finishedT.Sub(b.started), b.err, b.out)
	default:
	}
	docker(t, time.Minute, "kill", "--signal", "INT", b.name)
	select {
	case <-b.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("background load %s still running 2m after SIGINT", b.name)
	}
	b.forget()
	res, err := parseResult(b.out)
	if err != nil {
		t.Fatalf("background load %s: %v; %v\n%s", b.name, b.err, err, b.out)
	}
	return res
}

// waitServing runs short loads until each added node has answered one, and
// logs when, after `returned` (when `up --scale` returned), the load in which
// it first answered ran: the node took its first call within that window.
// Every short load must succeed in full.
func (c *cluster) waitServing(t *testing.T, what string, added []node, returned time.Time) {
	t.Helper()
	type window struct{ from, to time.Duration }
	first := map[string]window{}
	loads := 0
	poll(t, time.Minute, fmt.Sprintf("new nodes %v answer", ids(added)), func() (bool, string) {
		from := since(returned)
		res := c.load(t, "--concurrency", "4", "--duration", "1s")
		to := since(returned)
		loads++
		assertNoFailures(t, res)
		for _, n := range added {
			if _, seen := first[n.id]; !seen && res.ByNode[n.id] > 0 {
				first[n.id] = window{from, to}
			}
		}
		return len(first) == len(added), fmt.Sprintf("answered by %v", slices.Sorted(maps.Keys(res.ByNode)))
	})
	for _, n := range added {
		w := first[n.id]
		c.logf(t, "%s: new node %s took its first RPC at most %v after `up` returned (in the short load run from +%v to +%v)", what, n.id, w.to, w.from, w.to)
	}
	c.logf(t, "%s: %d short loads (1s of calls each, plus the client container's start) until every new node answered; none failed", what, loads)
}

// prometheus is the base URL of a Prometheus that scrapes the nodes, as job
// routeguide, found through their /sd.
type prometheus string

// counters are the GetFeature calls each node has handled, by node id, as
// Prometheus last scraped them.
func (p prometheus) counters(t *testing.T) map[string]float64 {
	t.Helper()
	samples, err := p.query(fmt.Sprintf(`sum by (node_id) (grpc_server_handled_total{job=%q,grpc_method="GetFeature"})`, service))
	if err != nil {
		t.Fatalf("Prometheus: %v", err)
	}
	out := map[string]float64{}
	for _, s := range samples {
		out[s.labels["node_id"]] = s.value
	}
	return out
}

// waitTraffic polls Prometheus until each of the nodes has handled calls
// since the call: a background load is under way and reaches all of them.
func (p prometheus) waitTraffic(t *testing.T, nodes []string) {
	t.Helper()
	base := p.counters(t)
	poll(t, time.Minute, fmt.Sprintf("calls reach %v (Prometheus)", nodes), func() (bool, string) {
		now := p.counters(t)
		var idle []string
		for _, id := range nodes {
			if v, ok := now[id]; !ok || v == 0 || v == base[id] {
				idle = append(idle, id)
			}
		}
		return len(idle) == 0, fmt.Sprintf("no new calls on %v", idle)
	})
}

// waitUp polls until up{job="routeguide"} is 1 for exactly the nodes given,
// and for nothing else.
func (p prometheus) waitUp(t *testing.T, nodes []string, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, fmt.Sprintf("Prometheus up=1 for %v", nodes), func() (bool, string) {
		samples, err := p.query(fmt.Sprintf(`up{job=%q}`, service))
		if err != nil {
			return false, err.Error()
		}
		var upNodes []string
		for _, s := range samples {
			if s.value == 1 {
				upNodes = append(upNodes, s.labels["node_id"])
			}
		}
		return len(samples) == len(nodes) && sameSet(upNodes, nodes),
			fmt.Sprintf("%d targets, up=1 for %v", len(samples), upNodes)
	})
}

type sample struct {
	labels map[string]string
	value  float64
}

// query asks Prometheus's HTTP API for an instant vector.
func (p prometheus) query(q string) ([]sample, error) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(string(p) + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: HTTP %s: %w", q, resp.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, body.Error)
	}
	var out []sample
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %q: %w", q, s, err)
		}
		out = append(out, sample{labels: r.Metric, value: v})
	}
	return out, nil
}

// prometheusPages are the pages of Prometheus's web UI the test opens, and
// what each must show. Debian's Prometheus serves the classic UI, under
// /classic/; / leads to its graph page.
var prometheusPages = []struct{ path, shows string }{
	{"/", `id="graph_container"`},
	{"/classic/graph", `id="graph_container"`},
	{"/classic/targets", "Targets"},
}

// assetRE finds the scripts, style sheets and icon a page loads.
var assetRE = regexp.MustCompile(`(?:src|href)="(/classic/static/[^"?]+)`)

// checkPrometheusUI opens each page of the UI, as a browser would: each
// must render (200, Prometheus's title, its own content, and for the
// targets page every node), and every asset it loads must be served. An
// image without the UI's files answers the pages 500 or 404.
func (c *cluster) checkPrometheusUI(t *testing.T, nodes []string) {
	t.Helper()
	assets := map[string]bool{}
	for _, page := range prometheusPages {
		status, body, err := httpGet(string(c.prom) + page.path)
		switch {
		case err != nil:
			t.Errorf("GET %s: %v", page.path, err)
			continue
		case status != http.StatusOK:
			t.Errorf("GET %s: HTTP %d, want 200:\n%.300s", page.path, status, body)
			continue
		case !strings.Contains(body, "<title>Prometheus") || !strings.Contains(body, page.shows):
			t.Errorf("GET %s: the page lacks Prometheus's title or %q:\n%.300s", page.path, page.shows, body)
		}
		if page.path == "/classic/targets" {
			for _, id := range nodes {
				if !strings.Contains(body, id) {
					t.Errorf("the targets page does not list node %s", id)
				}
			}
		}
		for _, m := range assetRE.FindAllStringSubmatch(body, -1) {
			assets[m[1]] = true
		}
	}
	if len(assets) < 5 {
		t.Errorf("the pages load %d assets (%v); want the UI's scripts and styles", len(assets), slices.Sorted(maps.Keys(assets)))
	}
	for _, asset := range slices.Sorted(maps.Keys(assets)) {
		if status, body, err := httpGet(string(c.prom) + asset); err != nil || status != http.StatusOK || body == "" {
			t.Errorf("GET %s: HTTP %d, %d bytes, %v; want 200 and the file", asset, status, len(body), err)
		}
	}
	c.logf(t, "Prometheus web UI: %d pages render, the %d assets they load are served", len(prometheusPages), len(assets))
}

// httpGet returns the status and body at url, following redirects.
func httpGet(url string) (int, string, error) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// downLeavesNothing runs `down -v` and checks that no container, network or
// volume of the project is left.
func (c *cluster) downLeavesNothing(t *testing.T) {
	start := time.Now()
	c.compose(t, 3*time.Minute, "down", "-v", "--remove-orphans")
	c.logf(t, "down -v: %v", since(start))
	assertNoneLeft(t, "down -v", "label=com.docker.compose.project="+c.project, "container", "network", "volume")
}

// assertNoneLeft checks that docker lists no object of each kind (container,
// network, volume, config, service) that matches filter, after what.
func assertNoneLeft(t *testing.T, after, filter string, kinds ...string) {
	t.Helper()
	for _, kind := range kinds {
		args := []string{kind, "ls", "-a", "-q", "--filter", filter}
		if kind != "container" {
			args = slices.Delete(args, 2, 3) // -a lists stopped containers; other kinds have no such flag
		}
		if out := strings.TrimSpace(docker(t, time.Minute, args...)); out != "" {
			t.Errorf("docker %s after %s: %s left behind", strings.Join(args, " "), after, strings.Join(strings.Fields(out), ", "))
		}
	}
}

// dumpLogs logs what the containers said, for a failed run.
func (c *cluster) dumpLogs(t *testing.T) {
	out, _ := runQuiet(time.Minute, c.env, c.args("ps")...)
	t.Logf("compose ps:\n%s", out)
	out, _ = runQuiet(time.Minute, c.env, c.args("logs", "--no-color", "--tail=60")...)
	t.Logf("compose logs (last 60 lines each):\n%s", out)
}

// poll calls check every 250ms until it reports done, and fails the test
// with check's last word if timeout passes first.
func poll(t *testing.T, timeout time.Duration, what string, check func() (done bool, state string)) {
	t.Helper()
	pollpkg.UntilReported(t, timeout, 250*time.Millisecond, what, check)
}

func assertNoFailures(t *testing.T, res load.Result) {
	t.Helper()
	if res.Failed != 0 || res.OK == 0 {
		t.Errorf("load: %d ok, %d failed %v; want some ok and none failed", res.OK, res.Failed, res.Errors)
	}
}

// assertSpread checks that every node answered, and at least half its even
// share of the calls: round robin spreads them evenly.
func assertSpread(t *testing.T, res load.Result, nodes []string) {
	t.Helper()
	if got := slices.Sorted(maps.Keys(res.ByNode)); !sameSet(got, nodes) {
		t.Errorf("calls answered by %v; want by exactly %v", got, nodes)
	}
	total := res.OK + res.Failed
	for _, id := range nodes {
		if n := res.ByNode[id]; n*2*len(nodes) < total {
			t.Errorf("node %s answered %d of %d calls; round robin over %d nodes should give it about %d", id, n, total, len(nodes), total/len(nodes))
		}
	}
}

func summary(res load.Result) string {
	return fmt.Sprintf("%d ok, %d failed %v, %.0f qps, p50 %v p99 %v, by node %v", res.OK, res.Failed, res.Errors, res.QPS, res.P50, res.P99, res.ByNode)
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Millisecond) }

// TestPinnedVersionsAgree guards the versions that deploy/ repeats: etcd's
// build module must build the etcd that go.mod requires, the Dockerfile the
// health probe that build-images.sh installs and the Go that go.mod names.
func TestPinnedVersionsAgree(t *testing.T) {
	for _, tc := range []struct {
		name          string
		source, srcRE string // where the version is decided
		copy, copyRE  string // where it is repeated
	}{
		{"etcd", "../go.mod", `go\.etcd\.io/etcd/server/v3 (\S+)`, "etcd/build/go.mod", `go\.etcd\.io/etcd/server/v3 (\S+)`},
		{"etcdctl", "../go.mod", `go\.etcd\.io/etcd/server/v3 (\S+)`, "etcd/build/go.mod", `go\.etcd\.io/etcd/etcdctl/v3 (\S+)`},
		{"grpc-health-probe", "build-images.sh", `(?m)^GRPC_HEALTH_PROBE_VERSION=(\S+)`, "Dockerfile", `(?m)^ARG GRPC_HEALTH_PROBE_VERSION=(\S+)`},
		{"jaeger", "build-images.sh", `(?m)^JAEGER_VERSION=(\S+)`, "Dockerfile", `(?m)^ARG JAEGER_VERSION=(\S+)`},
		{"go", "../go.mod", `(?m)^go (\d+\.\d+)`, "Dockerfile", `(?m)^ARG GO_VERSION=(\S+)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := find(t, tc.source, tc.srcRE)
			if got := find(t, tc.copy, tc.copyRE); got != want {
				t.Errorf("%s has %s, but %s has %s: make them agree", tc.copy, got, tc.source, want)
			}
		})
	}
}

// find returns the first group of re's first match in the file, a path
// relative to deploy/.
func find(t *testing.T, file, re string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", file))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(re).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s: no match for %s", file, re)
	}
	return string(m[1])
}
