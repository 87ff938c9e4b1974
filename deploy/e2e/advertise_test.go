package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/discovery"
)

// TestAdvertiseTwoNetworks runs node containers on two networks
// (testdata/two-networks.yml): the one with --advertise-network registers
// its address on that network, where a client that is on it alone reaches
// it; the one without refuses to choose, and says why.
func TestAdvertiseTwoNetworks(t *testing.T) {
	requireDocker(t)
	subnets := freeSubnets(t, 2)
	front, back := subnets[0], subnets[1]
	c := newCluster(t, fmt.Sprintf("rg-swarm-adv-%d", os.Getpid()), "e2e/testdata/two-networks.yml")
	c.env = append(c.env, "ROUTEGUIDE_FRONT_SUBNET="+front.String(), "ROUTEGUIDE_BACK_SUBNET="+back.String())
	c.compose(t, 2*time.Minute, "up", "-d")
	etcd := strings.TrimSpace(c.compose(t, time.Minute, "ps", "-q", "etcd"))

	var addr string
	poll(t, time.Minute, "node on-back registered", func() (bool, string) {
		out, err := runQuiet(time.Minute, nil, "docker", "exec", etcd, etcdctl, "get", service+"/on-back", "--print-value-only")
		if err != nil || strings.TrimSpace(out) == "" {
			return false, out
		}
		ep, err := discovery.DecodeEndpoint(service+"/on-back", []byte(strings.TrimSpace(out)))
		if err != nil {
			t.Fatalf("registry entry: %v\n%s", err, out)
		}
		addr = ep.Addr
		return true, ""
	})
	if ap, err := netip.ParseAddrPort(addr); err != nil || !back.Contains(ap.Addr()) {
		t.Fatalf("on-back registered %s; want an address on the back network %s (front is %s)", addr, back, front)
	}
	t.Logf("on a front (%s) and a back (%s) network, with --advertise-network %s, the node registered %s", front, back, back, addr)

	res, err := runQuiet(time.Minute, nil, "docker", "run", "--rm", "--network", c.project+"_back",
		"routeguide/client:"+imageTag(), "--target", addr, "get", "40.9", "-74.3")
	if err != nil {
		t.Errorf("a client on the back network only, dialling %s: %v\n%s", addr, err, res)
	}

	var out []byte
	guess := strings.TrimSpace(c.compose(t, time.Minute, "ps", "-q", "guess"))
	poll(t, time.Minute, "guess exits", func() (bool, string) {
		out := docker(t, time.Minute, "inspect", "-f", "{{.State.Status}}", guess)
		return strings.TrimSpace(out) == "exited", out
	})
	code := strings.TrimSpace(docker(t, time.Minute, "inspect", "-f", "{{.State.ExitCode}}", guess))
	out, _ = exec.Command("docker", "logs", guess).CombinedOutput() // the node logs to stderr
	logs := string(out)
	if code == "0" || !strings.Contains(logs, "several networks") || !strings.Contains(logs, "--advertise-network") {
		t.Errorf("guess, on two networks without --advertise-network, exited %s; want a failure that asks for --advertise-network. Its logs:\n%s", code, logs)
	}
	t.Logf("without --advertise-network: exit status %s, %q", code, lineWith(logs, "several networks"))
}
