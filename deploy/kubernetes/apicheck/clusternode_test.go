package apicheck

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The parts of the single-node cluster beside the API server: a containerd
// of its own, the images, CoreDNS, the controller manager, the scheduler and
// the kubelet. Each starts as a process of the test (startProcess) and stops
// with it; the order of t.Cleanup stops them in reverse.

// containerd is the cluster's container runtime: a second containerd beside
// Docker's, with its own root, state, socket and config, serving the CRI.
type containerd struct {
	socket string
}

// The sandbox image: pause (./pause), built here, as no registry is reached.
const pauseImage = "docker.io/routeguide/pause:" + imageTag

func startContainerd(t *testing.T, dir string) containerd {
	t.Helper()
	root := filepath.Join(dir, "containerd")
	c := containerd{socket: filepath.Join(root, "containerd.sock")}
	cniConf := filepath.Join(dir, "cni")
	for _, d := range []string{root, cniConf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// restrict_oom_score_adj: root here may lack CAP_SYS_RESOURCE, and a
	// sandbox whose OOM score runc cannot lower fails to start.
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
`, filepath.Join(root, "root"), filepath.Join(root, "state"), c.socket, c.socket+".ttrpc",
		filepath.Join(root, "opt"), pauseImage, cniBinDir, cniConf)
	writeFile(t, filepath.Join(root, "config.toml"), config)
	// The bridge plugin makes the bridge; firewall lets pods through
	// Docker's FORWARD policy of DROP; no masquerade, as pods talk only to
	// each other and the host.
	writeFile(t, filepath.Join(cniConf, "10-rgk8s.conflist"), fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "rgk8s",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
`, bridgeName, podSubnet, gatewayIP, filepath.Join(dir, "cni-ipam")))

	t.Cleanup(func() { stopShims(t, c) }) // runs once the process has stopped
	p := startProcess(t, dir, "containerd", "containerd", "--config", filepath.Join(root, "config.toml"))
	t.Cleanup(func() { c.removeAll(t) }) // runs before the process stops
	p.waitReady(t, 60*time.Second, func() error {
		_, err := c.ctr("version")
		return err
	})
	return c
}

// ctr runs ctr against this containerd, in the CRI's namespace.
func (c containerd) ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", c.socket, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// removeAll stops and removes every container left in the CRI's namespace
// (none, once the kubelet has removed its pods), so that no shim outlives
// the containerd that started it.
func (c containerd) removeAll(t *testing.T) {
	t.Helper()
	out, err := c.ctr("containers", "list", "--quiet")
	if err != nil {
		t.Errorf("ctr containers list: %v: %s", err, out)
		return
	}
	ids := strings.Fields(out)
	for _, id := range ids {
		_, _ = c.ctr("tasks", "kill", "--signal", "SIGKILL", id)
		_, _ = c.ctr("tasks", "delete", "--force", id)
		if out, err := c.ctr("containers", "delete", id); err != nil {
			t.Errorf("ctr containers delete %s: %v: %s", id, err, out)
		}
	}
	if len(ids) > 0 {
		t.Logf("containerd: removed %d containers the kubelet left", len(ids))
	}
}

// importImages loads the images from the docker save archive at path.
func (c containerd) importImages(t *testing.T, path string) {
	t.Helper()
	start := time.Now()
	if out, err := c.ctr("images", "import", path); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	out, _ := c.ctr("images", "list", "--quiet")
	t.Logf("containerd: images imported in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
}

// buildImages builds the project's images with deploy/build-images.sh, and
// the pause image, all tagged imageTag, and saves them to one archive for
// containerd. It holds Docker's lock throughout; dockerStillWorks removes
// the images from Docker when the test ends.
func buildImages(t *testing.T, dir string, images []string) string {
	t.Helper()
	pause := filepath.Join(dir, "pause-image")
	if err := os.MkdirAll(pause, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(pause, "pause"), "./pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./pause: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(pause, "Dockerfile"), "FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT [\"/pause\"]\n")
	archive := filepath.Join(dir, "images.tar")
	all := append([]string{"routeguide/pause:" + imageTag}, images...)
	script := fmt.Sprintf(`set -e
ROUTEGUIDE_IMAGE_TAG=%[1]s bash deploy/build-images.sh node client etcd prometheus
docker build -q -t routeguide/pause:%[1]s %[2]q
docker save -o %[3]q %[4]s`, imageTag, pause, archive, strings.Join(all, " "))
	cmd := exec.Command("flock", dockerLock, "bash", "-c", script)
	cmd.Dir = "../../.."
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the images: %v\n%s", err, out)
	}
	t.Logf("images built and saved in %v: %v", time.Since(start).Round(time.Second), all)
	return archive
}

// startCoreDNS starts CoreDNS on the bridge's address, answering for
// cluster.local from the API server, and waits until it has synced.
func startCoreDNS(t *testing.T, bin, dir string, api apiServer) {
	t.Helper()
	ready := "127.0.0.1:" + freePort(t)
	corefile := filepath.Join(dir, "Corefile")
	writeFile(t, corefile, fmt.Sprintf(`cluster.local:53 {
    bind %s
    errors
    ready %s
    kubernetes cluster.local {
        kubeconfig %s
        pods insecure
    }
}
`, gatewayIP, ready, api.kubeconfig))
	p := startProcess(t, dir, "coredns", bin, "-conf", corefile)
	httpc := &http.Client{Timeout: 2 * time.Second}
	p.waitReady(t, 60*time.Second, func() error { return get(httpc, "http://"+ready+"/ready", "") })
}

// startControlPlane starts the controller manager and the scheduler.
func startControlPlane(t *testing.T, bins tools, dir string, api apiServer) {
	t.Helper()
	httpc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	cmPort := freePort(t)
	cm := startProcess(t, dir, "kube-controller-manager", bins.controllerManager,
		"--kubeconfig="+api.kubeconfig,
		"--authentication-kubeconfig="+api.kubeconfig,
		"--authorization-kubeconfig="+api.kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+cmPort,
		"--leader-elect=false",
		"--root-ca-file="+filepath.Join(dir, "ca.crt"), // kube-root-ca.crt, which every pod's token volume takes
		"--service-account-private-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--allocate-node-cidrs=false",
		"--horizontal-pod-autoscaler-sync-period=5s",
		"--profiling=false",
	)
	schedPort := freePort(t)
	sched := startProcess(t, dir, "kube-scheduler", bins.scheduler,
		"--kubeconfig="+api.kubeconfig,
		"--authentication-kubeconfig="+api.kubeconfig,
		"--authorization-kubeconfig="+api.kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+schedPort,
		"--leader-elect=false",
		"--profiling=false",
	)
	cm.waitReady(t, 60*time.Second, func() error { return get(httpc, "https://127.0.0.1:"+cmPort+"/healthz", "") })
	sched.waitReady(t, 60*time.Second, func() error { return get(httpc, "https://127.0.0.1:"+schedPort+"/healthz", "") })
}

// startKubelet starts the kubelet on containerd's CRI and waits for its
// node to be Ready.
func startKubelet(t *testing.T, bins tools, dir string, api apiServer, c containerd) {
	t.Helper()
	root := filepath.Join(dir, "kubelet")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	healthz := freePort(t)
	writeFile(t, filepath.Join(root, "resolv.conf"), "")
	// cgroup v1 and swap are what this host has; images never collected,
	// as nothing could pull them again; eviction only near a full disk. Its
	// API on 127.0.0.1 answers nobody: the test reads the pods' logs from
	// podLogsDir.
	writeFile(t, filepath.Join(root, "config.yaml"), fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: %s
failCgroupV1: false
failSwapOn: false
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %s
podLogsDir: %s
maxPods: 40
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%%, imagefs.available: 2%%}
serializeImagePulls: false
`, freePort(t), healthz, c.socket, cgroupRoot, gatewayIP, filepath.Join(root, "resolv.conf"), filepath.Join(dir, "pod-logs")))
	p := startProcess(t, dir, "kubelet", bins.kubelet,
		"--config="+filepath.Join(root, "config.yaml"),
		"--kubeconfig="+api.kubeconfig,
		"--root-dir="+root,
		"--cert-dir="+filepath.Join(root, "pki"),
		"--hostname-override="+nodeName,
		"--node-ip="+gatewayIP, // a node IP may not be a loopback address
	)
	httpc := &http.Client{Timeout: 2 * time.Second}
	p.waitReady(t, 60*time.Second, func() error { return get(httpc, "http://127.0.0.1:"+healthz+"/healthz", "") })
	start := time.Now()
	// Polled: the node object exists only once the kubelet has registered.
	p.waitReady(t, 120*time.Second, func() error {
		out, err := api.kubectl(bins.kubectl, "get", "node/"+nodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("node %s Ready: %q, %v", nodeName, out, err)
		}
		return nil
	})
	t.Logf("node %s Ready after %v", nodeName, time.Since(start).Round(time.Millisecond))
}

// makeBridge creates the bridge with its gateway address before any pod,
// so that CoreDNS can listen there from the start; the bridge plugin takes
// it as it finds it. restoreHost deletes it.
func makeBridge(t *testing.T) {
	t.Helper()
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", gatewayIP + "/24", "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
}

// stopShims ends the shims still serving this containerd's socket after it
// stopped: they carry its address on their command line.
func stopShims(t *testing.T, c containerd) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(data), "containerd-shim") || !strings.Contains(string(data), c.socket) {
			continue
		}
		var pid int
		fmt.Sscanf(strings.TrimPrefix(p, "/proc/"), "%d", &pid)
		t.Errorf("a shim of the cluster's containerd outlived it (pid %d); killing it", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// insecureTLS is for the health of the controller manager and the
// scheduler, on 127.0.0.1, which serve it with certificates of their own.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// getJSON decodes the JSON that url answers with 200.
func getJSON(url string, v any) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
