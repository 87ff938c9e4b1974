package apicheck

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// The host side of the cluster test: what it needs, and what it puts back.
// Its addresses and names are its own: a second run waits for the first
// (clusterLock), and Docker's networks (172.17.0.0/16 and the ranges compose
// takes from 172.18.0.0/16 up and 192.168.0.0/16) never overlap them.
const (
	clusterLock = "/tmp/routeguide-k8s-e2e.lock"
	dockerLock  = "/tmp/routeguide-docker.lock"
	bridgeName  = "rgk8s0"
	podSubnet   = "10.213.0.0/24"
	gatewayIP   = "10.213.0.1" // the bridge's address; CoreDNS listens on it
	serviceCIDR = "10.214.0.0/24"
	cgroupRoot  = "/rgk8s" // every pod's cgroup is under it
	imageTag    = "k8s-e2e"
	nodeName    = "rgk8s-node"
)

// cniPlugins are the plugins of Debian's containernetworking-plugins the
// cluster's network takes: firewall, because Docker sets FORWARD's policy
// to DROP and br_netfilter sends bridged traffic through it.
var cniPlugins = []string{"bridge", "host-local", "portmap", "firewall"}

const cniBinDir = "/usr/lib/cni"

// kernelSettings are the sysctls the kubelet (and the bridge plugin) set;
// the test puts back what it found.
var kernelSettings = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
}

// unavailable skips the test on a developer's machine, and fails it under
// CI, where the cluster test must run.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("cluster test cannot run: "+format, args...)
	}
	t.Skipf("SKIPPED: cluster test NOT RUN (under CI this fails): "+format, args...)
}

// requireClusterHost checks what the cluster needs of the host: root, and
// the programs of Docker and of Debian's containerd, runc and CNI plugins.
func requireClusterHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "it needs root (containerd, the kubelet, a bridge and iptables)")
	}
	for _, p := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", "docker", "iptables", "ip", "flock"} {
		if _, err := exec.LookPath(p); err != nil {
			unavailable(t, "%s is not on PATH (Debian: containerd, runc, docker.io, iptables, iproute2, util-linux)", p)
		}
	}
	for _, p := range cniPlugins {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			unavailable(t, "no CNI plugin %s in %s (Debian: apt-get install containernetworking-plugins)", p, cniBinDir)
		}
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		unavailable(t, "docker info fails: %v: %s", err, strings.TrimSpace(string(out)))
	}
}

// lockCluster takes the cluster lock for the rest of the test: one cluster
// on the host at a time, since the bridge, the ranges and the cgroup root
// are fixed names.
func lockCluster(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(clusterLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Logf("waiting for another cluster test to end (%s)", clusterLock)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { f.Close() })
}

// hostState is what the test finds on the host before it starts anything,
// so that it removes only what it added.
type hostState struct {
	sysctls map[string]string
	chains  map[string][]string // per iptables command and table: "cmd table chain"
	rules   []string            // ownRules
	tables  []string            // nfTables
	netns   []string
	veths   []string // the host's veth links
	absent  []string // of hostPaths
}

// hostPaths are the paths outside the test's directory that the kubelet
// and containerd make: the kubelet's links to container logs, and the
// shims' runc state for the CRI's namespace.
var hostPaths = []string{"/var/log/containers", "/run/containerd/runc/k8s.io", "/run/netns"}

var iptablesCommands = []string{"iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"}

func snapshotHost(t *testing.T) hostState {
	t.Helper()
	s := hostState{sysctls: map[string]string{}, chains: map[string][]string{}}
	for _, k := range kernelSettings {
		if v, err := os.ReadFile("/proc/sys/" + k); err == nil {
			s.sysctls[k] = strings.TrimSpace(string(v))
		}
	}
	s.chains = iptablesChains()
	s.rules = ownRules()
	s.tables = nfTables(t)
	s.netns, _ = filepath.Glob("/run/netns/cni-*")
	s.veths = veths(t)
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); err != nil {
			s.absent = append(s.absent, p)
		}
	}
	return s
}

// ownChain is a chain name the kubelet or the CNI plugins make.
var ownChain = regexp.MustCompile(`^(CNI-|KUBE-)`)

// iptablesChains lists, per command and table, the chains named like the
// kubelet's and the CNI plugins'.
func iptablesChains() map[string][]string {
	out := map[string][]string{}
	for _, cmd := range iptablesCommands {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle"} {
			data, err := exec.Command(cmd, "-w", "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(strings.NewReader(string(data)))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) >= 2 && f[0] == "-N" && ownChain.MatchString(f[1]) {
					key := cmd + " " + table
					out[key] = append(out[key], f[1])
				}
			}
		}
	}
	return out
}

// restoreHost puts back what the cluster changed: kernel settings, the
// chains (and the rules that jump to them) it added, network namespaces
// left behind, the bridge, the cgroups under cgroupRoot, and any mount under
// dir. It reports what it could not put back as errors.
func restoreHost(t *testing.T, before hostState, dir string) {
	t.Helper()
	for k, v := range before.sysctls {
		now, err := os.ReadFile("/proc/sys/" + k)
		if err == nil && strings.TrimSpace(string(now)) != v {
			t.Logf("restoring %s: %s (was %s during the test)", strings.ReplaceAll(k, "/", "."), v, strings.TrimSpace(string(now)))
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				t.Errorf("restore %s: %v", k, err)
			}
		}
	}
	removeChains(t, before.chains)
	removeTables(t, before.tables)
	netns, _ := filepath.Glob("/run/netns/cni-*")
	for _, ns := range netns {
		if !slices.Contains(before.netns, ns) {
			t.Errorf("network namespace %s left behind by the cluster; removing it", ns)
			_ = syscall.Unmount(ns, syscall.MNT_DETACH)
			_ = os.Remove(ns)
		}
	}
	if out, err := exec.Command("ip", "link", "show", bridgeName).CombinedOutput(); err == nil {
		if out, err := exec.Command("ip", "link", "delete", bridgeName).CombinedOutput(); err != nil {
			t.Errorf("delete bridge %s: %v: %s", bridgeName, err, out)
		}
	} else if !strings.Contains(string(out), "does not exist") {
		t.Errorf("ip link show %s: %v: %s", bridgeName, err, out)
	}
	unmountUnder(t, dir)
	removeCgroups(t)
	for _, p := range before.absent {
		removeMadeDir(t, p, dir)
	}
}

// removeMadeDir removes p, a directory the cluster made outside dir, with
// the links into dir it holds: the kubelet's links to the logs of the
// containers it had not removed when it stopped. Anything else in it is
// reported and left.
func removeMadeDir(t *testing.T, p, dir string) {
	t.Helper()
	entries, err := os.ReadDir(p)
	if err != nil {
		return // not made
	}
	var others []string
	links := 0
	for _, e := range entries {
		path := filepath.Join(p, e.Name())
		if target, err := os.Readlink(path); err == nil && strings.HasPrefix(target, dir+"/") {
			if err := os.Remove(path); err != nil {
				t.Errorf("remove %s: %v", path, err)
			}
			links++
			continue
		}
		others = append(others, e.Name())
	}
	if links > 0 {
		t.Logf("%s: removed %d links into %s", p, links, dir)
	}
	if len(others) > 0 {
		t.Errorf("%s, which the cluster made, holds %v; left as it is", p, others)
		return
	}
	if err := os.Remove(p); err != nil {
		t.Errorf("remove %s, which the cluster made: %v", p, err)
	}
}

// removeChains deletes the CNI-* and KUBE-* chains that were not there
// before, with the rules of other chains that jump to them.
func removeChains(t *testing.T, before map[string][]string) {
	t.Helper()
	for key, chains := range iptablesChains() {
		cmd, table, _ := strings.Cut(key, " ")
		var added []string
		for _, c := range chains {
			if !slices.Contains(before[key], c) {
				added = append(added, c)
			}
		}
		if len(added) == 0 {
			continue
		}
		rules, _ := exec.Command(cmd, "-w", "-t", table, "-S").Output()
		for _, line := range strings.Split(string(rules), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "-A" {
				continue
			}
			if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) && slices.Contains(added, f[i+1]) && !slices.Contains(added, f[1]) {
				// -S quotes what it prints (a --comment with spaces) as a
				// shell would read it back: let the shell split the rule.
				del := cmd + " -w -t " + table + " -D " + strings.TrimPrefix(line, "-A ")
				if out, err := exec.Command("sh", "-c", del).CombinedOutput(); err != nil {
					t.Errorf("%s: %v: %s", del, err, out)
				}
			}
		}
		for _, c := range added {
			_ = exec.Command(cmd, "-w", "-t", table, "-F", c).Run()
		}
		for _, c := range added {
			if out, err := exec.Command(cmd, "-w", "-t", table, "-X", c).CombinedOutput(); err != nil {
				t.Errorf("%s -t %s -X %s: %v: %s", cmd, table, c, err, out)
			}
		}
		t.Logf("%s -t %s: removed the chains %v", cmd, table, added)
	}
}

// nfTables lists the tables of the ip and ip6 families, as "family name":
// iptables over nf_tables makes a table when a rule first needs it (the
// kubelet's in mangle, for one), and deleting its chains leaves it.
func nfTables(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		return nil // iptables-legacy's tables always exist
	}
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		t.Errorf("nft list tables: %v", err)
		return nil
	}
	var tables []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" && (f[1] == "ip" || f[1] == "ip6") {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	return tables
}

// removeTables deletes the ip and ip6 tables that were not there before
// and hold no rule now: those iptables made for the cluster.
func removeTables(t *testing.T, before []string) {
	t.Helper()
	for _, tb := range nfTables(t) {
		if slices.Contains(before, tb) {
			continue
		}
		family, table, _ := strings.Cut(tb, " ")
		cmd := map[string]string{"ip": "iptables", "ip6": "ip6tables"}[family]
		rules, err := exec.Command(cmd, "-w", "-t", table, "-S").Output()
		if err != nil {
			t.Errorf("%s -t %s -S: %v", cmd, table, err)
			continue
		}
		if slices.ContainsFunc(strings.Split(strings.TrimSpace(string(rules)), "\n"), func(line string) bool {
			return !strings.HasPrefix(line, "-P ") // a rule, or a chain of its own
		}) {
			t.Errorf("the table %s, new since the cluster started, holds rules; left as it is:\n%s", tb, rules)
			continue
		}
		if out, err := exec.Command("nft", "delete", "table", family, table).CombinedOutput(); err != nil {
			t.Errorf("nft delete table %s: %v: %s", tb, err, out)
		}
	}
}

// mountsUnder lists the mount points at or under dir.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	return mounts, nil
}

// unmountUnder unmounts every mount under dir, the deepest first: the
// kubelet's bind mount of its root directory onto itself, which it leaves.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	mounts, err := mountsUnder(dir)
	if err != nil {
		t.Error(err)
		return
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	if len(mounts) > 0 {
		t.Logf("unmounting what the cluster left under %s: %v", dir, mounts)
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

// makeCgroupRoot makes cgroupRoot in every cgroup v1 hierarchy, where the
// kubelet wants it to exist; cpuset's with the CPUs and memory nodes of the
// root, without which no process could join it.
func makeCgroupRoot(t *testing.T) {
	t.Helper()
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		if fi, err := os.Stat(h); err != nil || !fi.IsDir() {
			continue
		}
		if err := os.Mkdir(h+cgroupRoot, 0o755); err != nil && !os.IsExist(err) {
			t.Fatalf("make cgroup %s: %v", h+cgroupRoot, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err == nil {
					err = os.WriteFile(filepath.Join(h+cgroupRoot, f), v, 0o644)
				}
				if err != nil {
					t.Fatalf("cgroup %s: %s: %v", h+cgroupRoot, f, err)
				}
			}
		}
	}
}

// removeCgroups removes the cgroups under cgroupRoot in every hierarchy,
// the deepest first; they are empty once every container has stopped.
func removeCgroups(t *testing.T) {
	t.Helper()
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupRoot)
	if unified := "/sys/fs/cgroup" + cgroupRoot; !slices.Contains(roots, unified) {
		roots = append(roots, unified)
	}
	for _, root := range roots {
		if _, err := os.Stat(root); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	}
}

// verifyHost checks, once restoreHost has run, that the host is as the test
// found it: each kernel setting as before, no iptables rule or chain of the
// cluster's, no veth it made, no bridge, mount, cgroup or process of its
// own. Other programs (Docker, other tests) may change the host meanwhile,
// so it looks only for what is the cluster's.
func verifyHost(t *testing.T, before hostState, dir string) {
	t.Helper()
	left := 0
	leftBehind := func(format string, args ...any) {
		t.Helper()
		left++
		t.Errorf("left behind by the cluster: "+format, args...)
	}
	for k, v := range before.sysctls {
		if now, err := os.ReadFile("/proc/sys/" + k); err != nil || strings.TrimSpace(string(now)) != v {
			leftBehind("%s is %q (%v); it was %q", strings.ReplaceAll(k, "/", "."), strings.TrimSpace(string(now)), err, v)
		}
	}
	for _, r := range ownRules() {
		if !slices.Contains(before.rules, r) {
			leftBehind("iptables: %s", r)
		}
	}
	for _, tb := range nfTables(t) {
		if !slices.Contains(before.tables, tb) {
			leftBehind("the nftables table %s", tb)
		}
	}
	for _, v := range veths(t) {
		if !slices.Contains(before.veths, v) && !strings.Contains(v, " master docker") && !strings.Contains(v, " master br-") {
			leftBehind("a veth not on a Docker bridge: %s", v)
		}
	}
	for _, p := range before.absent {
		if _, err := os.Lstat(p); err == nil {
			leftBehind("%s", p)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + bridgeName); err == nil {
		leftBehind("the bridge %s", bridgeName)
	}
	for _, under := range []string{dir, "/run/netns"} {
		mounts, err := mountsUnder(under)
		if err != nil {
			t.Error(err)
		}
		for _, m := range mounts {
			if m != "/run/netns" && !slices.Contains(before.netns, m) {
				leftBehind("the mount %s", m)
			}
		}
	}
	if cgroups, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupRoot); len(cgroups) > 0 {
		leftBehind("the cgroups %v", cgroups)
	}
	if _, err := os.Stat("/sys/fs/cgroup" + cgroupRoot); err == nil {
		leftBehind("the cgroup %s", "/sys/fs/cgroup"+cgroupRoot)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, err := os.ReadFile(p); err == nil && strings.Contains(string(data), dir) {
			leftBehind("the process %s: %s", filepath.Base(filepath.Dir(p)), strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
	if left == 0 {
		t.Logf("the host is as the test found it: kernel settings, iptables, links, mounts, cgroups, processes")
	}
}

// ownRule marks what the cluster's programs write into iptables: the
// chains of the CNI plugins and the kubelet, the bridge, and its ranges.
var ownRule = regexp.MustCompile(`CNI-|KUBE-|` + bridgeName + `|` + regexp.QuoteMeta(strings.TrimSuffix(podSubnet, "0/24")) + `|` + regexp.QuoteMeta(strings.TrimSuffix(serviceCIDR, "0/24")))

// ownRules are the lines of every iptables-save that ownRule marks,
// counters aside, each prefixed with its command and table.
func ownRules() []string {
	var rules []string
	for _, cmd := range iptablesCommands {
		if _, err := exec.LookPath(cmd + "-save"); err != nil {
			continue
		}
		data, err := exec.Command(cmd + "-save").Output()
		if err != nil {
			continue
		}
		table := ""
		for _, line := range strings.Split(string(data), "\n") {
			switch {
			case strings.HasPrefix(line, "*"):
				table = line
			case ownRule.MatchString(line) && !strings.HasPrefix(line, "#"):
				rules = append(rules, cmd+" "+table+" "+counters.ReplaceAllString(line, ""))
			}
		}
	}
	return rules
}

// counters are the packet and byte counts iptables-save prints on chains.
var counters = regexp.MustCompile(` \[\d+:\d+\]$`)

// veths lists the host's veth links as `ip -o link` shows them: name, and
// master if any.
func veths(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show", "type", "veth").Output()
	if err != nil {
		t.Errorf("ip -o link show type veth: %v", err)
		return nil
	}
	var links []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		link := strings.TrimSuffix(f[1], ":")
		if i := slices.Index(f, "master"); i >= 0 && i+1 < len(f) {
			link += " master " + f[i+1]
		}
		links = append(links, link)
	}
	return links
}
