package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/discovery"
)

// TestSwarm deploys deploy/docker-stack.yml as a stack of its own and takes
// it, under client load, through scaling 3 -> 5 -> 2, a rolling update of
// every task and the loss of an etcd member's task, asserting that no call
// fails, that every node advertises its overlay address and that Prometheus
// scrapes exactly the nodes; then that `docker stack rm` and the removal of
// the stack's volumes leave nothing behind. It joins a swarm of one when the
// engine is in none, and leaves it again; a swarm it did not join it leaves
// alone.
func TestSwarm(t *testing.T) {
	requireDocker(t)
	joinSwarm(t)
	s := deployStack(t)
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow() // every step builds on the one before
		}
	}
	var nodes []node

	step("deploy with 3 nodes", func(t *testing.T) {
		nodes = s.waitNodes(t, 3, 3*time.Minute)
		s.logf(t, "deploy: %v from `docker stack deploy` to 3 nodes registered, each on the overlay %s", since(s.deployed), s.subnet)
		s.prom.waitUp(t, ids(nodes), 2*time.Minute)
		s.logf(t, "deploy: Prometheus has up=1 for the 3 targets %v after `docker stack deploy`", since(s.deployed))
	})

	step("scale 3 to 5 under load", func(t *testing.T) {
		bg := s.startLoad(t)
		s.prom.waitTraffic(t, ids(nodes))
		before := nodes
		start := time.Now()
		s.service(t, "scale", s.name+"_node=5")
		nodes = s.waitNodes(t, 5, 2*time.Minute)
		registered := since(start)
		s.prom.waitTraffic(t, ids(newNodes(before, nodes)))
		s.logf(t, "scale 3->5: the 2 new tasks registered %v and took calls (seen by Prometheus, 5s scrapes) %v after `docker service scale` started", registered, since(start))
		s.prom.waitUp(t, ids(nodes), time.Minute)
		s.logf(t, "scale 3->5: Prometheus has up=1 for the 5 targets %v after the scale started", since(start))
		s.finish(t, "scale 3->5", bg)
	})

	step("scale 5 to 2 under load", func(t *testing.T) {
		bg := s.startLoad(t)
		s.prom.waitTraffic(t, ids(nodes))
		start := time.Now()
		s.service(t, "scale", s.name+"_node=2")
		nodes = s.waitNodes(t, 2, 2*time.Minute)
		s.logf(t, "scale 5->2: 2 nodes left, and registered, %v after `docker service scale` started", since(start))
		s.prom.waitUp(t, ids(nodes), time.Minute)
		s.prom.waitTraffic(t, ids(nodes))
		s.finish(t, "scale 5->2", bg)
	})

	step("rolling update of 3 under load", func(t *testing.T) {
		bg := s.startLoad(t)
		s.service(t, "scale", s.name+"_node=3")
		nodes = s.waitNodes(t, 3, 2*time.Minute)
		s.prom.waitTraffic(t, ids(nodes))
		before := nodes
		start := time.Now()
		s.service(t, "update", "--force", s.name+"_node")
		returned := since(start)
		nodes = s.waitNodes(t, 3, 2*time.Minute)
		if len(newNodes(before, nodes)) != 3 {
			t.Errorf("after the update, nodes %v; want 3 new ones, none of %v", ids(nodes), ids(before))
		}
		s.prom.waitTraffic(t, ids(nodes))
		s.logf(t, "rolling update of 3 tasks (start-first, one at a time): `docker service update --force` returned after %v (it waits 5s of monitoring after the last task); every new task taking calls after %v", returned, since(start))
		s.prom.waitUp(t, ids(nodes), time.Minute)
		s.finish(t, "rolling update", bg)
	})

	step("etcd member's task killed under load", func(t *testing.T) {
		bg := s.startLoad(t)
		s.prom.waitTraffic(t, ids(nodes))
		killed := s.containers(t, "etcd2")
		if len(killed) != 1 {
			t.Fatalf("etcd2 tasks running: %v; want 1", killed)
		}
		start := time.Now()
		docker(t, time.Minute, "kill", killed[0])
		poll(t, 2*time.Minute, "a new etcd2 task serving linearizable reads", func() (bool, string) {
			running := s.containers(t, "etcd2")
			if len(running) != 1 || running[0] == killed[0] {
				return false, fmt.Sprintf("running: %v", running)
			}
			out, err := runQuiet(time.Minute, nil, "docker", "exec", running[0], etcdctl, "--command-timeout=2s", "endpoint", "health")
			return err == nil, out
		})
		s.logf(t, "etcd2's task killed: a new one serving linearizable reads, with its data, %v after `docker kill`", since(start))
		if got := s.registered(t); !sameSet(slices.Collect(maps.Keys(got)), ids(nodes)) {
			t.Errorf("registered after etcd2's loss: %v; want %v", got, ids(nodes))
		}
		s.prom.waitTraffic(t, ids(nodes))
		s.finish(t, "etcd2 killed", bg)
	})

	step("stack rm leaves nothing", s.removeLeavesNothing)
}

// joinSwarm makes the engine a swarm manager: it is one already, or the
// test makes a swarm of one and leaves it when it ends.
func joinSwarm(t *testing.T) {
	t.Helper()
	out := strings.Fields(docker(t, time.Minute, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"))
	switch {
	case len(out) == 2 && out[0] == "active" && out[1] == "true":
		t.Log("swarm: the engine is a manager of a swarm already; the test uses it and will not leave it")
	case len(out) == 2 && out[0] == "inactive":
		args := []string{"swarm", "init"}
		if addr := os.Getenv("ROUTEGUIDE_SWARM_ADVERTISE_ADDR"); addr != "" {
			args = append(args, "--advertise-addr", addr)
		}
		docker(t, time.Minute, args...)
		t.Log("swarm: initialised a swarm of one; the test leaves it when it ends")
		t.Cleanup(func() {
			if out, err := runQuiet(time.Minute, nil, "docker", "swarm", "leave", "--force"); err != nil {
				t.Errorf("cleanup: docker swarm leave --force: %v\n%s", err, out)
			}
		})
	default:
		t.Fatalf("swarm: the engine's swarm state is %q: neither a manager nor out of any swarm", out)
	}
}

// stack is one deployment of deploy/docker-stack.yml, named for this run.
type stack struct {
	name     string
	file     string
	env      []string
	tag      string
	subnet   netip.Prefix
	prom     prometheus
	deployed time.Time
	loads    int
	running  []string // background loads' containers not yet stopped
	figures  []string
}

// deployStack deploys the stack on an overlay subnet no network uses and
// Prometheus on a free port, and removes it, with its volumes, when the
// test ends.
func deployStack(t *testing.T) *stack {
	t.Helper()
	file, err := filepath.Abs(filepath.Join("..", "docker-stack.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tag := imageTag()
	port := freePort(t)
	s := &stack{
		name:   fmt.Sprintf("rg-swarm-%d", os.Getpid()),
		file:   file,
		tag:    tag,
		subnet: freeSubnets(t, 1)[0],
		prom:   prometheus(fmt.Sprintf("http://127.0.0.1:%d", port)),
	}
	s.env = append(os.Environ(),
		"ROUTEGUIDE_IMAGE_TAG="+tag,
		"ROUTEGUIDE_NODES=3",
		"ROUTEGUIDE_PROMETHEUS_PORT="+strconv.Itoa(port),
		"ROUTEGUIDE_SWARM_SUBNET="+s.subnet.String())
	t.Logf("stack %s: images routeguide/*:%s, overlay %s, Prometheus on %s", s.name, tag, s.subnet, s.prom)
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs(t)
		}
		for _, name := range s.running {
			runQuiet(30*time.Second, nil, "docker", "rm", "-f", name)
		}
		s.remove(t, 3*time.Minute)
		t.Log("figures:\n  " + strings.Join(s.figures, "\n  "))
	})
	s.deployed = time.Now()
	if out, err := runQuiet(5*time.Minute, s.env, "docker", "stack", "deploy", "--resolve-image", "never", "-c", s.file, s.name); err != nil {
		t.Fatalf("docker stack deploy: %v\n%s", err, out)
	}
	return s
}

func (s *stack) logf(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	s.figures = append(s.figures, line)
	t.Log(line)
}

// service runs `docker service ARGS`, which waits for the service to
// converge.
func (s *stack) service(t *testing.T, args ...string) {
	t.Helper()
	docker(t, 5*time.Minute, append([]string{"service"}, args...)...)
}

// containers lists the running containers of the stack's service svc.
func (s *stack) containers(t *testing.T, svc string) []string {
	t.Helper()
	return strings.Fields(docker(t, time.Minute, "ps", "-q", "--filter", "status=running",
		"--filter", "label=com.docker.swarm.service.name="+s.name+"_"+svc))
}

// nodes lists the node service's running containers.
func (s *stack) nodes(t *testing.T) []node {
	t.Helper()
	var nodes []node
	for _, container := range s.containers(t, "node") {
		out, err := runQuiet(time.Minute, nil, "docker", "inspect", "-f", "{{.State.Running}} {{.Config.Hostname}}", container)
		if f := strings.Fields(out); err == nil && len(f) == 2 && f[0] == "true" {
			nodes = append(nodes, node{container: container, id: f[1] + ":" + grpcPort})
		}
	}
	return nodes
}

// waitNodes polls until want node tasks run and exactly they are
// registered, each at an address on the stack's overlay, and returns them.
func (s *stack) waitNodes(t *testing.T, want int, timeout time.Duration) []node {
	t.Helper()
	var nodes []node
	poll(t, timeout, fmt.Sprintf("%d nodes running and registered on %s", want, s.subnet), func() (bool, string) {
		nodes = s.nodes(t)
		regs := s.registered(t)
		if len(nodes) != want || !sameSet(slices.Collect(maps.Keys(regs)), ids(nodes)) {
			return false, fmt.Sprintf("running %v, registered %v", ids(nodes), regs)
		}
		for id, addr := range regs {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || !s.subnet.Contains(ap.Addr()) {
				t.Fatalf("node %s advertises %s, not an address on the stack's overlay %s", id, addr, s.subnet)
			}
		}
		return true, ""
	})
	return nodes
}

// registered maps each node id in etcd to the address it registered,
// read with etcdctl in etcd1's task; nil while that cannot answer.
func (s *stack) registered(t *testing.T) map[string]string {
	t.Helper()
	etcd1 := s.containers(t, "etcd1")
	if len(etcd1) != 1 {
		return nil // not started yet, or being replaced; the caller polls
	}
	out, err := runQuiet(time.Minute, nil, "docker", "exec", etcd1[0], etcdctl, "get", "--prefix", service+"/", "-w", "json")
	if err != nil {
		return nil // etcd may not have a leader yet; the caller polls
	}
	var resp struct {
		KVs []struct {
			Key   []byte `json:"key"`
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("etcdctl get: %v\n%s", err, out)
	}
	regs := map[string]string{}
	for _, kv := range resp.KVs {
		ep, err := discovery.DecodeEndpoint(string(kv.Key), kv.Value)
		if err != nil {
			t.Fatalf("registry entry %s: %v", kv.Key, err)
		}
		regs[strings.TrimPrefix(string(kv.Key), service+"/")] = ep.Addr
	}
	return regs
}

// startLoad runs the client on the stack's overlay, in the background.
func (s *stack) startLoad(t *testing.T) *bgLoad {
	t.Helper()
	s.loads++
	name := fmt.Sprintf("%s-load-%d", s.name, s.loads)
	s.running = append(s.running, name)
	argv := slices.Concat([]string{"docker", "run", "--rm", "--name", name, "--network", s.name + "_cluster",
		"-e", "ROUTEGUIDE_ETCD=http://etcd1:2379,http://etcd2:2379,http://etcd3:2379",
		"routeguide/client:" + s.tag}, loadFlags)
	b := startBackgroundLoad(t, name, nil, argv)
	b.forget = func() { s.running = slices.DeleteFunc(s.running, func(n string) bool { return n == name }) }
	return b
}

// finish stops a step's load, logs its figures and asserts that no call failed.
func (s *stack) finish(t *testing.T, what string, bg *bgLoad) {
	t.Helper()
	res := bg.stop(t)
	s.logf(t, "%s: load over %v: %s", what, since(bg.started), summary(res))
	assertNoFailures(t, res)
}

// remove runs `docker stack rm`, waits until no container or network of the
// stack is left, then removes its volumes, which stack rm keeps.
func (s *stack) remove(t *testing.T, timeout time.Duration) {
	t.Helper()
	docker(t, time.Minute, "stack", "rm", s.name)
	label := "label=com.docker.stack.namespace=" + s.name
	poll(t, timeout, "no container or network of stack "+s.name, func() (bool, string) {
		left := docker(t, time.Minute, "ps", "-a", "-q", "--filter", label) + docker(t, time.Minute, "network", "ls", "-q", "--filter", label)
		return strings.TrimSpace(left) == "", "left: " + strings.Join(strings.Fields(left), ", ")
	})
	if v := strings.Fields(docker(t, time.Minute, "volume", "ls", "-q", "--filter", label)); len(v) > 0 {
		docker(t, time.Minute, append([]string{"volume", "rm"}, v...)...)
	}
}

// removeLeavesNothing removes the stack and its volumes and checks that no
// container, network, volume, config or service of it is left.
func (s *stack) removeLeavesNothing(t *testing.T) {
	start := time.Now()
	s.remove(t, 3*time.Minute)
	s.logf(t, "docker stack rm: every container and network gone, and the volumes removed, %v after it", since(start))
	assertNoneLeft(t, "stack rm", "label=com.docker.stack.namespace="+s.name, "container", "network", "volume", "config", "service")
}

// dumpLogs logs the tasks and what the services said, for a failed run.
func (s *stack) dumpLogs(t *testing.T) {
	out, _ := runQuiet(time.Minute, nil, "docker", "stack", "ps", "--no-trunc", s.name)
	t.Logf("stack ps:\n%s", out)
	for _, svc := range []string{"node", "etcd1", "etcd2", "etcd3", "prometheus"} {
		out, _ := runQuiet(time.Minute, nil, "docker", "service", "logs", "--no-trunc", "--tail", "40", s.name+"_"+svc)
		t.Logf("service %s logs (last 40 lines of each task):\n%s", svc, out)
	}
}

// freeSubnets returns n /24 subnets of 10.213.0.0/16 that no Docker network
// uses now, for the networks of a test run.
func freeSubnets(t *testing.T, n int) []netip.Prefix {
	t.Helper()
	var used []netip.Prefix
	for _, id := range strings.Fields(docker(t, time.Minute, "network", "ls", "-q")) {
		out, err := runQuiet(time.Minute, nil, "docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", id)
		if err != nil {
			continue // removed meanwhile
		}
		for _, f := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(f); err == nil {
				used = append(used, p)
			}
		}
	}
	var free []netip.Prefix
	for i := range 256 {
		third := (os.Getpid() + i) % 256
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(third), 0}), 24)
		if !slices.ContainsFunc(used, p.Overlaps) {
			free = append(free, p)
			used = append(used, p)
		}
		if len(free) == n {
			return free
		}
	}
	t.Fatalf("no %d free /24 subnets in 10.213.0.0/16", n)
	return nil
}

// imageTag is the tag of the images under test: $ROUTEGUIDE_IMAGE_TAG, as
// deploy/build-images.sh and the stack file read it, or dev.
func imageTag() string {
	if tag := os.Getenv("ROUTEGUIDE_IMAGE_TAG"); tag != "" {
		return tag
	}
	return "dev"
}
