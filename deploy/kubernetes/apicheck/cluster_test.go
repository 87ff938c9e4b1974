package apicheck

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// overlay is what the cluster test applies: deploy/kubernetes with the
// patches its cluster forces, each with its reason (in the file).
const overlay = "testdata/cluster"

// The project's images the overlay runs, as Docker names them.
var clusterImages = []string{
	"routeguide/node:" + imageTag, "routeguide/client:" + imageTag,
	"routeguide/etcd:" + imageTag, "routeguide/prometheus:" + imageTag,
}

// TestKubernetesClusterFailsNoCallThroughScalingRolloutsAndEtcdLoss runs
// deploy/kubernetes on a real single-node cluster started here (etcd,
// kube-apiserver, controller manager, scheduler, kubelet on containerd's CRI
// with bridge CNI, CoreDNS), and, under load from a client pod, checks
// what only running pods show: etcd forms its cluster, the nodes register
// their pod IPs, readiness follows the nodes' gRPC health, scaling, a rolling
// restart and the loss of an etcd pod fail no call, Prometheus scrapes every
// node it finds through /sd, and the PodDisruptionBudgets refuse an eviction
// beyond them. A negative control (control_test.go) shows that its readiness
// checks catch a probe on a wrong port, and verifyHost that the host is left
// as it was found. See docs/DEPLOY.md, "Run on a cluster".
func TestKubernetesClusterFailsNoCallThroughScalingRolloutsAndEtcdLoss(t *testing.T) {
	requireClusterHost(t)
	lockCluster(t)
	bins := buildTools(t)
	coredns := buildCoreDNS(t)

	// Short paths: unix sockets live here.
	dir, err := os.MkdirTemp("", "rgk8s-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	t.Cleanup(func() { dockerStillWorks(t) })
	before := snapshotHost(t)
	t.Cleanup(func() { verifyHost(t, before, dir) })
	t.Cleanup(func() { restoreHost(t, before, dir) })
	images := buildImages(t, dir, clusterImages)

	start := time.Now()
	etcdURL := startEtcd(t, bins.etcd, dir)
	api := startAPIServer(t, bins.apiserver, dir, etcdURL, serviceCIDR)
	makeBridge(t)
	rt := startContainerd(t, dir)
	rt.importImages(t, images)
	startCoreDNS(t, coredns, dir, api)
	startControlPlane(t, bins, dir, api)
	makeCgroupRoot(t)
	startKubelet(t, bins, dir, api, rt)
	t.Logf("FIGURE cluster up (etcd to node Ready, builds aside) in %v", time.Since(start).Round(time.Millisecond))

	k := kube{t: t, api: api, bin: bins.kubectl, logs: filepath.Join(dir, "pod-logs"), kubelet: filepath.Join(dir, "kubelet")}
	makeVolumes(t, k, dir)
	k.must("create", "namespace", namespace)
	t.Cleanup(k.deleteAll) // first of all: while the kubelet runs
	start = time.Now()
	k.must("apply", "-k", linkOverlay(t, dir))
	k.rolledOut("statefulset/etcd", 300*time.Second)
	k.rolledOut("deployment/node", 300*time.Second)
	k.rolledOut("deployment/prometheus", 300*time.Second)
	t.Logf("FIGURE deploy/kubernetes applied and rolled out in %v", time.Since(start).Round(time.Millisecond))

	etcd := k.etcdClient()
	steps := []struct {
		name string
		run  func(t *testing.T, k kube, etcd *clientv3.Client)
	}{
		{"etcd's StatefulSet forms one cluster of three", etcdFormsCluster},
		{"the nodes register their pod IPs", nodesRegisterPodIPs},
		{"a copy of the node with its readiness probe on a wrong port is caught unready (negative control)", wrongProbePortIsCaught},
		{"readiness follows the node's gRPC health", readinessFollowsHealth},
		{"scaling 3 to 5 to 2 fails no call, and the HPA restores its minimum", scalingFailsNoCall},
		{"a rolling restart fails no call", rolloutFailsNoCall},
		{"deleting etcd's leader pod fails no call", etcdLossFailsNoCall},
		{"Prometheus scrapes every node it finds through /sd", prometheusScrapesEveryNode},
		{"the PodDisruptionBudgets refuse an eviction beyond them", budgetsRefuseEvictions},
		{"the client Job of the manifests completes", clientJobCompletes},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, k.with(t), etcd) }) {
			return // the later steps build on this one's state
		}
	}
}

const namespace = "routeguide"

// linkOverlay copies the overlay into dir, beside a link to deploy/kubernetes
// named base, and returns its directory.
func linkOverlay(t *testing.T, dir string) string {
	t.Helper()
	o := filepath.Join(dir, "overlay")
	base, err := filepath.Abs(manifests)
	if err == nil {
		err = os.MkdirAll(o, 0o755)
	}
	if err == nil {
		err = os.Symlink(base, filepath.Join(o, "base"))
	}
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(overlay, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(o, "kustomization.yaml"), string(data))
	return o
}

// kube runs kubectl against the cluster, in the routeguide namespace.
type kube struct {
	t       *testing.T
	api     apiServer
	bin     string
	logs    string // the kubelet's podLogsDir
	kubelet string // the kubelet's root directory
}

func (k kube) with(t *testing.T) kube { k.t = t; return k }

func (k kube) run(args ...string) (string, error) {
	return k.api.kubectl(k.bin, append([]string{"--namespace=" + namespace}, args...)...)
}

// must runs kubectl and fails the test on an error.
func (k kube) must(args ...string) string {
	k.t.Helper()
	out, err := k.run(args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// apply applies the YAML in doc.
func (k kube) apply(doc string) {
	k.t.Helper()
	path := filepath.Join(k.t.TempDir(), "object.yaml")
	writeFile(k.t, path, doc)
	k.must("apply", "-f", path)
}

// rolloutStatus is the check every step makes of a rollout: kubectl rollout
// status, which waits until the new pods are Ready (their readiness probes
// pass) and the old ones are gone. The negative control shows it catches a
// probe that never passes.
func (k kube) rolloutStatus(what string, within time.Duration) (string, error) {
	return k.run("rollout", "status", what, "--timeout="+within.String())
}

// rolledOut fails the test unless what has rolled out within the time.
func (k kube) rolledOut(what string, within time.Duration) {
	k.t.Helper()
	if out, err := k.rolloutStatus(what, within); err != nil {
		k.t.Fatalf("%s has not rolled out within %v: %v\n%s", what, within, err, out)
	}
}

// get returns a JSONPath of an object, or of a list (-l selector).
func (k kube) get(what, jsonpath string, args ...string) string {
	k.t.Helper()
	return k.must(append([]string{"get", what, "-o", "jsonpath=" + jsonpath}, args...)...)
}

// deleteAll deletes the namespace and waits until the kubelet has stopped
// every pod, before the kubelet itself stops.
func (k kube) deleteAll() {
	start := time.Now()
	if out, err := k.run("delete", "namespace", namespace, "--timeout=120s"); err != nil {
		k.t.Errorf("kubectl delete namespace: %v\n%s", err, out)
	}
	if out, err := k.api.kubectl(k.bin, "delete", "persistentvolumes", "--all", "--timeout=60s"); err != nil {
		k.t.Errorf("kubectl delete persistentvolumes: %v\n%s", err, out)
	}
	// The API lets a pod go once its containers have stopped; the kubelet
	// unmounts its volumes after that.
	eventually(k.t, 60*time.Second, "the kubelet unmounts the deleted pods' volumes", func() error {
		mounts, err := mountsUnder(filepath.Join(k.kubelet, "pods"))
		if err == nil && len(mounts) > 0 {
			err = fmt.Errorf("still mounted: %v", mounts)
		}
		return err
	})
	k.t.Logf("FIGURE namespace and volumes deleted in %v", time.Since(start).Round(time.Millisecond))
}

// eventually calls check until it returns nil, failing t after within. The
// main module's internal/testutils/poll is out of this module's reach.
func eventually(t *testing.T, within time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not after %v: %v", what, within, err)
		}
		time.Sleep(250 * time.Millisecond) // the poll's interval
	}
}

// makeVolumes makes the three volumes etcd's claims bind to: host paths,
// owned by etcd's user, since fsGroup does not apply to a host path.
func makeVolumes(t *testing.T, k kube, dir string) {
	t.Helper()
	for i := range 3 {
		path := filepath.Join(dir, "volumes", strconv.Itoa(i))
		if err := os.MkdirAll(path, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 65532, 65532); err != nil {
			t.Fatal(err)
		}
		k.apply(fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata: {name: rgk8s-etcd-%d}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: %q, type: Directory}
`, i, path))
	}
}

// podIPs returns the names and IPs of the pods that selector matches and
// that are Ready.
func (k kube) readyPods(selector string) map[string]string {
	k.t.Helper()
	out := k.get("pods", `{range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{range .status.conditions[?(@.type=="Ready")]}{.status}{end}{"\n"}{end}`, "-l", selector)
	pods := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "True" { // no deletion timestamp
			pods[f[0]] = f[1]
		}
	}
	return pods
}

const (
	nodeSelector = "app.kubernetes.io/name=routeguide-node"
	etcdSelector = "app.kubernetes.io/name=etcd"
)

// etcdClient is a client of the cluster's etcd, from the host, by pod IPs
// (the host does not resolve the cluster's names).
func (k kube) etcdClient() *clientv3.Client {
	k.t.Helper()
	var endpoints []string
	for _, ip := range k.readyPods(etcdSelector) {
		endpoints = append(endpoints, "http://"+ip+":2379")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { c.Close() })
	return c
}

// followEtcd points the client at the etcd pods' IPs of now: a pod that
// comes back has a new one.
func (k kube) followEtcd(etcd *clientv3.Client) {
	k.t.Helper()
	var endpoints []string
	for _, ip := range k.readyPods(etcdSelector) {
		endpoints = append(endpoints, "http://"+ip+":2379")
	}
	if len(endpoints) > 0 {
		etcd.SetEndpoints(endpoints...)
	}
}

func etcdFormsCluster(t *testing.T, k kube, etcd *clientv3.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods := k.readyPods(etcdSelector)
	if len(pods) != 3 {
		t.Fatalf("%d etcd pods Ready; want 3: %v", len(pods), pods)
	}
	members, err := etcd.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range members.Members {
		names = append(names, m.Name+" "+strings.Join(m.PeerURLs, ","))
	}
	slices.Sort(names)
	want := []string{"etcd-0 http://etcd-0.etcd:2380", "etcd-1 http://etcd-1.etcd:2380", "etcd-2 http://etcd-2.etcd:2380"}
	if !slices.Equal(names, want) {
		t.Fatalf("etcd's members are %q; want %q", names, want)
	}
	leaders := map[uint64]bool{}
	for name, ip := range pods {
		st, err := etcd.Status(ctx, ip+":2379")
		if err != nil {
			t.Fatalf("status of %s: %v", name, err)
		}
		leaders[st.Leader] = true
	}
	if len(leaders) != 1 || leaders[0] {
		t.Fatalf("the members see the leaders %v; want one", leaders)
	}
	t.Logf("etcd: %d members, one leader, each pod Ready: %v", len(names), pods)
}

// registered returns the addresses registered under routeguide/ in etcd.
func registered(ctx context.Context, etcd *clientv3.Client) ([]string, error) {
	resp, err := etcd.Get(ctx, "routeguide/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, kv := range resp.Kvs {
		var e struct{ Addr string }
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		addrs = append(addrs, e.Addr)
	}
	slices.Sort(addrs)
	return addrs, nil
}

// nodesRegistered waits until the registry holds exactly the Ready nodes'
// pod IPs, n of them, and returns them.
func nodesRegistered(t *testing.T, k kube, etcd *clientv3.Client, n int) []string {
	t.Helper()
	var addrs []string
	took := eventually(t, 120*time.Second, fmt.Sprintf("the registry holds the %d Ready nodes' pod IPs", n), func() error {
		var want []string
		for _, ip := range k.readyPods(nodeSelector) {
			want = append(want, ip+":50051")
		}
		slices.Sort(want)
		k.followEtcd(etcd)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := registered(ctx, etcd)
		if err != nil {
			return err
		}
		if len(want) != n || !slices.Equal(got, want) {
			return fmt.Errorf("registered %v; Ready %v", got, want)
		}
		addrs = got
		return nil
	})
	t.Logf("registered: %v (after %v)", addrs, took.Round(time.Millisecond))
	return addrs
}

func nodesRegisterPodIPs(t *testing.T, k kube, etcd *clientv3.Client) {
	nodesRegistered(t, k, etcd, 3)
}

// health asks the node at addr for the health of service.
func health(addr, service string) (string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return "", err
	}
	return resp.Status.String(), nil
}

// readinessFollowsHealth: every Ready node says SERVING for the probed
// service; a probe of a service the node does not serve keeps the new pod
// of a rollout unready, and the rollout waits with the old pods serving.
func readinessFollowsHealth(t *testing.T, k kube, etcd *clientv3.Client) {
	const probed = "routeguide.RouteGuide"
	if got := k.get("deployment/node", "{.spec.template.spec.containers[0].readinessProbe.grpc.service}"); got != probed {
		t.Fatalf("the node's readiness probe asks for %q; this step expects %q", got, probed)
	}
	for name, ip := range k.readyPods(nodeSelector) {
		if st, err := health(ip+":50051", probed); err != nil || st != "SERVING" {
			t.Errorf("Ready pod %s: health of %s is %s, %v; want SERVING", name, probed, st, err)
		}
	}

	l := k.startLoad(t, "load-readiness", 60*time.Second)
	old := k.readyPods(nodeSelector)
	k.must("patch", "deployment/node", "--type=json", "-p",
		`[{"op": "replace", "path": "/spec/template/spec/containers/0/readinessProbe/grpc/service", "value": "routeguide.Absent"}]`)
	var pod, ip string
	eventually(t, 60*time.Second, "the probe of an absent service fails on the rollout's new pod", func() error {
		out, err := k.run("get", "events", "--field-selector=reason=Unhealthy", "-o",
			`jsonpath={range .items[*]}{.involvedObject.name} {.count} {.message}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || !strings.HasPrefix(f[0], "node-") || old[f[0]] != "" {
				continue
			}
			if strings.Contains(line, "NotFound") {
				pod = f[0]
				t.Logf("event: %s", line)
				return nil
			}
		}
		return fmt.Errorf("no Unhealthy event (NotFound) on a new node pod yet:\n%s", out)
	})
	ip = k.get("pod/"+pod, "{.status.podIP}")
	if ready := k.get("pod/"+pod, `{.status.conditions[?(@.type=="Ready")].status}`); ready != "False" {
		t.Errorf("pod %s, whose probe fails, is Ready: %q", pod, ready)
	}
	if st, err := health(ip+":50051", "routeguide.Absent"); err == nil {
		t.Errorf("pod %s answers %s for routeguide.Absent; want an error (NotFound)", pod, st)
	}
	if st, err := health(ip+":50051", probed); err != nil || st != "SERVING" {
		t.Errorf("pod %s: health of %s is %s, %v; want SERVING", pod, probed, st, err)
	}
	if now := k.readyPods(nodeSelector); len(now) != 3 {
		t.Errorf("during the stuck rollout %d node pods are Ready; want the 3 old ones: %v", len(now), now)
	}
	k.must("rollout", "undo", "deployment/node")
	k.rolledOut("deployment/node", 180*time.Second)
	l.result(t)
}

func scalingFailsNoCall(t *testing.T, k kube, etcd *clientv3.Client) {
	l := k.startLoad(t, "load-scaling", 90*time.Second)
	start := time.Now()
	k.must("scale", "deployment/node", "--replicas=5")
	k.rolledOut("deployment/node", 180*time.Second)
	nodesRegistered(t, k, etcd, 5)
	t.Logf("FIGURE 3 to 5 nodes, all registered, in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	k.must("scale", "deployment/node", "--replicas=2")
	// Below minReplicas, the HPA scales the Deployment back to 3 (it has no
	// metrics server, so it acts on its bounds only).
	eventually(t, 90*time.Second, "the HPA scales node back to its minReplicas of 3", func() error {
		if got := k.get("deployment/node", "{.spec.replicas}"); got != "3" {
			return fmt.Errorf("spec.replicas %s", got)
		}
		return nil
	})
	k.rolledOut("deployment/node", 180*time.Second)
	nodesRegistered(t, k, etcd, 3)
	t.Logf("FIGURE 5 to 2 nodes, back to 3 by the HPA, all registered, in %v", time.Since(start).Round(time.Millisecond))
	t.Logf("HPA: %s", k.get("hpa/node", `{range .status.conditions[*]}{.type}={.status} ({.reason}) {end}`))
	l.result(t)
}

func rolloutFailsNoCall(t *testing.T, k kube, etcd *clientv3.Client) {
	l := k.startLoad(t, "load-rollout", 90*time.Second)
	old := k.readyPods(nodeSelector)
	start := time.Now()
	k.must("rollout", "restart", "deployment/node")
	k.rolledOut("deployment/node", 240*time.Second)
	addrs := nodesRegistered(t, k, etcd, 3)
	for _, ip := range old {
		if slices.Contains(addrs, ip+":50051") {
			t.Errorf("an old pod's address %s is still registered after the rollout", ip)
		}
	}
	t.Logf("FIGURE rolling restart of 3 nodes in %v", time.Since(start).Round(time.Millisecond))
	l.result(t)
}

func etcdLossFailsNoCall(t *testing.T, k kube, etcd *clientv3.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods := k.readyPods(etcdSelector)
	var leader string
	for name, ip := range pods {
		st, err := etcd.Status(ctx, ip+":2379")
		if err == nil && st.Leader == st.Header.MemberId {
			leader = name
		}
	}
	if leader == "" {
		t.Fatalf("no etcd pod is the leader: %v", pods)
	}
	l := k.startLoad(t, "load-etcd-loss", 90*time.Second)
	start := time.Now()
	k.must("delete", "pod", leader)
	k.rolledOut("statefulset/etcd", 180*time.Second)
	eventually(t, 60*time.Second, "etcd has one leader again, on all three pods", func() error {
		leaders := map[uint64]bool{}
		for name, ip := range k.readyPods(etcdSelector) {
			st, err := etcd.Status(ctx, ip+":2379")
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			leaders[st.Leader] = true
		}
		if len(leaders) != 1 || leaders[0] {
			return fmt.Errorf("leaders %v", leaders)
		}
		return nil
	})
	t.Logf("FIGURE etcd leader pod %s deleted, back and in the cluster in %v", leader, time.Since(start).Round(time.Millisecond))
	nodesRegistered(t, k, etcd, 3)
	l.result(t)
}

func prometheusScrapesEveryNode(t *testing.T, k kube, etcd *clientv3.Client) {
	prom := k.readyPods("app.kubernetes.io/name=prometheus")
	if len(prom) != 1 {
		t.Fatalf("%d Prometheus pods Ready; want 1", len(prom))
	}
	var url string
	for _, ip := range prom {
		url = "http://" + ip + ":9090/api/v1/targets?state=active"
	}
	took := eventually(t, 90*time.Second, "Prometheus scrapes every registered node, and only those, and etcd", func() error {
		var want []string
		for _, ip := range k.readyPods(nodeSelector) {
			want = append(want, ip+":9090")
		}
		slices.Sort(want)
		var body struct {
			Data struct {
				ActiveTargets []struct {
					ScrapePool string `json:"scrapePool"`
					ScrapeURL  string `json:"scrapeUrl"`
					Health     string `json:"health"`
					Labels     map[string]string
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := getJSON(url, &body); err != nil {
			return err
		}
		var nodes []string
		etcdUp := 0
		for _, tg := range body.Data.ActiveTargets {
			switch {
			case tg.ScrapePool == "routeguide" && tg.Health == "up" && tg.Labels["node_id"] != "":
				nodes = append(nodes, tg.Labels["instance"])
			case tg.ScrapePool == "routeguide":
				return fmt.Errorf("node target %s is %s (labels %v)", tg.ScrapeURL, tg.Health, tg.Labels)
			case tg.ScrapePool == "etcd" && tg.Health == "up":
				etcdUp++
			}
		}
		slices.Sort(nodes)
		if !slices.Equal(nodes, want) || etcdUp != 3 {
			return fmt.Errorf("up: nodes %v (want %v), etcd members %d (want 3)", nodes, want, etcdUp)
		}
		return nil
	})
	t.Logf("Prometheus scrapes the 3 nodes and 3 etcd members, all up (after %v)", took.Round(time.Millisecond))
}

// evict asks the API server to evict pod, as kubectl drain does.
func (k kube) evict(pod string) (string, error) {
	path := filepath.Join(k.t.TempDir(), "eviction.json")
	writeFile(k.t, path, fmt.Sprintf(`{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": %q, "namespace": %q}}`, pod, namespace))
	return k.run("create", "--raw", "/api/v1/namespaces/"+namespace+"/pods/"+pod+"/eviction", "-f", path)
}

// budgetsRefuseEvictions evicts pods of each budget one after another: the
// first is allowed, the next, which the budget does not allow before the
// first is replaced, is refused.
func budgetsRefuseEvictions(t *testing.T, k kube, etcd *clientv3.Client) {
	l := k.startLoad(t, "load-evictions", 75*time.Second)
	for _, b := range []struct{ pdb, selector, rollout string }{
		{"node", nodeSelector, "deployment/node"},
		{"etcd", etcdSelector, "statefulset/etcd"},
	} {
		eventually(t, 60*time.Second, "PodDisruptionBudget "+b.pdb+" allows one disruption", func() error {
			if got := k.get("pdb/"+b.pdb, "{.status.disruptionsAllowed}"); got != "1" {
				return fmt.Errorf("disruptionsAllowed %q", got)
			}
			return nil
		})
		var names []string
		for name := range k.readyPods(b.selector) {
			names = append(names, name)
		}
		slices.Sort(names)
		if out, err := k.evict(names[0]); err != nil {
			t.Fatalf("PodDisruptionBudget %s: the first eviction (%s) is refused: %v\n%s", b.pdb, names[0], err, out)
		}
		out, err := k.evict(names[1])
		if err == nil || !strings.Contains(out, "disruption budget") {
			t.Fatalf("PodDisruptionBudget %s: the second eviction (%s) passes: %v\n%s", b.pdb, names[1], err, out)
		}
		t.Logf("PodDisruptionBudget %s: evicted %s; refused %s: %s", b.pdb, names[0], names[1], strings.TrimSpace(out))
		k.rolledOut(b.rollout, 180*time.Second)
	}
	nodesRegistered(t, k, etcd, 3)
	l.result(t)
}

func clientJobCompletes(t *testing.T, k kube, etcd *clientv3.Client) {
	k.must("wait", "job/client", "--for=condition=Complete", "--timeout=120s")
	out := k.jobLog("client")
	ok, failed := loadSummary(t, out)
	t.Logf("FIGURE the manifests' client Job: %d calls ok, %d failed (after %q failed starts)", ok, failed, k.get("job/client", "{.status.failed}"))
	if failed != 0 || ok == 0 {
		t.Errorf("the client Job: %d ok, %d failed; want all ok:\n%s", ok, failed, out)
	}
}

// load is a client pod running `client load` against the cluster, found
// through etcd the way the manifests' client Job finds it.
type load struct {
	k     kube
	name  string
	start time.Time // when it was running
}

// startLoad starts a load of d and returns once its pod runs.
func (k kube) startLoad(t *testing.T, name string, d time.Duration) load {
	t.Helper()
	etcdEnv := k.get("job/client", `{.spec.template.spec.containers[0].env[?(@.name=="ROUTEGUIDE_ETCD")].value}`)
	k.apply(fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: %s, namespace: %s}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
      containers:
        - name: client
          image: routeguide/client:%s
          imagePullPolicy: Never
          args: [load, --rpc, get, --concurrency, "4", --rps, "200", --duration, %s]
          env: [{name: ROUTEGUIDE_ETCD, value: %q}]
          resources: {requests: {cpu: 50m, memory: 32Mi}}
`, name, namespace, imageTag, d, etcdEnv))
	eventually(t, 60*time.Second, "load pod "+name+" runs", func() error {
		out, err := k.run("get", "pods", "-l", "job-name="+name, "-o", "jsonpath={.items[*].status.phase}")
		if err != nil || out != "Running" {
			return fmt.Errorf("phase %q, %v", out, err)
		}
		return nil
	})
	return load{k: k, name: name, start: time.Now()}
}

// result waits for the load to end, and fails t unless every call
// succeeded and the load ran through the whole step.
func (l load) result(t *testing.T) {
	t.Helper()
	stepEnd := time.Now()
	l.k.must("wait", "job/"+l.name, "--for=condition=Complete", "--timeout=180s")
	out := l.k.jobLog(l.name)
	ok, failed := loadSummary(t, out)
	finished := l.k.get("pods", "{.items[0].status.containerStatuses[0].state.terminated.finishedAt}", "-l", "job-name="+l.name)
	end, err := time.Parse(time.RFC3339, finished)
	if err != nil {
		t.Fatalf("load %s: finishedAt %q: %v", l.name, finished, err)
	}
	t.Logf("FIGURE %s: %d calls ok, %d failed; the step took %v of the load's run", l.name, ok, failed, stepEnd.Sub(l.start).Round(time.Millisecond))
	if end.Add(time.Second).Before(stepEnd) {
		t.Errorf("load %s ended at %v, before the step did (%v): make it longer", l.name, end, stepEnd)
	}
	if failed != 0 || ok == 0 {
		t.Errorf("load %s: %d ok, %d failed; want no failure:\n%s", l.name, ok, failed, out)
	}
	l.k.must("delete", "job/"+l.name, "--cascade=foreground")
}

// jobLog is the output of the container of job's pod that succeeded, as
// the kubelet keeps it (CRI log lines: time, stream, tag, text); the pods
// of failed starts before it are not its.
func (k kube) jobLog(job string) string {
	k.t.Helper()
	pod := k.get("pods", "{.items[0].metadata.name}_{.items[0].metadata.uid}", "-l", "job-name="+job, "--field-selector=status.phase=Succeeded")
	paths, _ := filepath.Glob(filepath.Join(k.logs, namespace+"_"+pod, "*", "0.log"))
	if len(paths) != 1 {
		k.t.Fatalf("job %s: %d logs of its pod %s; want 1", job, len(paths), pod)
	}
	data, err := os.ReadFile(paths[0])
	if err != nil {
		k.t.Fatal(err)
	}
	var b strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			b.WriteString(f[3] + "\n")
		}
	}
	return b.String()
}

var (
	okLine     = regexp.MustCompile(`(?m)^ok\s+(\d+)`)
	failedLine = regexp.MustCompile(`(?m)^failed\s+(\d+)`)
)

// loadSummary reads the counts of `client load`'s summary.
func loadSummary(t *testing.T, out string) (ok, failed int) {
	t.Helper()
	o, f := okLine.FindStringSubmatch(out), failedLine.FindStringSubmatch(out)
	if o == nil || f == nil {
		t.Fatalf("no load summary in:\n%s", out)
	}
	ok, _ = strconv.Atoi(o[1])
	failed, _ = strconv.Atoi(f[1])
	return ok, failed
}

// dockerStillWorks checks, once all is torn down, that Docker runs a
// container on its default network.
func dockerStillWorks(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}} {{.ContainersRunning}}").CombinedOutput(); err != nil {
		t.Errorf("after the cluster, docker info fails: %v: %s", err, out)
		return
	}
	out, err := exec.Command("flock", dockerLock, "docker", "run", "--rm", "routeguide/client:"+imageTag, "help").CombinedOutput()
	if err != nil {
		t.Errorf("after the cluster, docker run fails: %v: %s", err, out)
	} else {
		t.Log("after the cluster, Docker runs a container")
	}
	all := append([]string{"routeguide/pause:" + imageTag}, clusterImages...)
	if out, err := exec.Command("flock", append([]string{dockerLock, "docker", "image", "rm"}, all...)...).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such image") {
		t.Errorf("docker image rm: %v\n%s", err, out)
	}
}
