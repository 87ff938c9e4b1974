package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestComposeTLS brings up the secured variant, docker-compose.tls.yml, the
// way README.md documents it (deploy/tls/up.sh), with its certificates and
// passwords in a temporary directory: calls over mutual TLS succeed and are
// spread over the nodes, a client without a certificate is refused, no
// container logs an etcd password, and `down -v` leaves nothing behind.
func TestComposeTLS(t *testing.T) {
	requireDocker(t)
	upScript, err := filepath.Abs(filepath.Join("..", "tls", "up.sh"))
	if err != nil {
		t.Fatal(err)
	}
	// The default directory, which this test must leave as it found it.
	defaultDir, err := filepath.Abs(filepath.Join("..", "tls", "out"))
	if err != nil {
		t.Fatal(err)
	}
	defaultBefore := exists(t, defaultDir)
	// Made before the cluster, so that it is removed after `down -v`. The
	// containers run as user 65532 and read it through a bind mount.
	tlsDir := filepath.Join(t.TempDir(), "tls")
	if err := os.Mkdir(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tlsDir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}

	c := newCluster(t, fmt.Sprintf("routeguide-tls-e2e-%d", os.Getpid()), "docker-compose.yml", "docker-compose.tls.yml")
	c.env = append(c.env,
		"ROUTEGUIDE_TLS_DIR="+tlsDir,
		"ROUTEGUIDE_TLS_PROJECT="+c.project,
		"ROUTEGUIDE_COMPOSE="+strings.Join(c.command, " "))
	// etcd's client port requires a client certificate, and takes the user
	// from its common name: read the registry as the read-only user client.
	c.etcdctl = []string{"-e", "ETCDCTL_CERT=/tls/client.pem", "-e", "ETCDCTL_KEY=/tls/client-key.pem"}
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow() // every step builds on the one before
		}
	}
	var nodes []node
	var outputs []string // what up.sh and the clients printed, searched for passwords too

	step("up.sh with 2 nodes", func(t *testing.T) {
		start := time.Now()
		out, err := runQuiet(5*time.Minute, c.env, "bash", upScript, "--scale", "node=2")
		if err != nil {
			t.Fatalf("up.sh --scale node=2: %v\n%s", err, out)
		}
		outputs = append(outputs, out)
		returned := since(start)
		if !exists(t, filepath.Join(tlsDir, "ca.pem")) {
			t.Fatalf("up.sh wrote no ca.pem into ROUTEGUIDE_TLS_DIR %s", tlsDir)
		}
		if !defaultBefore && exists(t, defaultDir) {
			t.Errorf("up.sh made %s although ROUTEGUIDE_TLS_DIR was set", defaultDir)
		}
		nodes = c.nodes(t, 2)
		c.waitRegistered(t, ids(nodes), time.Minute)
		registered := since(start)
		c.waitHealthy(t, "node", time.Minute)
		c.logf(t, "up.sh --scale node=2 (certificates, etcd users, up): returned after %v; both nodes registered after %v, healthy (health probe over mutual TLS) after %v",
			returned, registered, since(start))
	})

	step("load over mutual TLS spreads over 2 nodes", func(t *testing.T) {
		res, out, _ := c.loadWith(t, nil, "--concurrency", "8", "--duration", "5s")
		outputs = append(outputs, out)
		c.logf(t, "load over mutual TLS: %s", summary(res))
		assertNoFailures(t, res)
		assertSpread(t, res, ids(nodes))
	})

	step("client without a certificate is refused", func(t *testing.T) {
		noCert := []string{"-e", "ROUTEGUIDE_TLS_CERT=", "-e", "ROUTEGUIDE_TLS_KEY="}
		res, out, err := c.loadWith(t, noCert, "--concurrency", "2", "--requests", "50")
		outputs = append(outputs, out)
		c.logf(t, "load without a client certificate: %s; exit: %v", summary(res), err)
		if code := exitCode(err); code != 1 {
			t.Errorf("client load without a certificate exited %d (%v); want 1, RPCs failed", code, err)
		}
		if res.OK != 0 || res.Failed != 50 || res.Errors["Unavailable"] != res.Failed || len(res.ByNode) != 0 {
			t.Errorf("load without a client certificate: %d ok, %d failed %v, answered by %v; want all 50 failed Unavailable and no node answering",
				res.OK, res.Failed, res.Errors, res.ByNode)
		}

		// One call, for the client's word on why. Over TLS 1.3 the client
		// finishes its side of the handshake before the node checks its
		// certificate, so the node's refusal reaches it either as the alert
		// ("tls: certificate required") or as a connection already closed
		// ("broken pipe"): only the code is asserted.
		out, err = runQuiet(2*time.Minute, c.env, c.args(slices.Concat([]string{"run", "--rm", "-T"}, noCert,
			[]string{"client", "get", "40.9", "-74.3"})...)...)
		outputs = append(outputs, out)
		if exitCode(err) != 1 || !strings.Contains(out, "Unavailable") {
			t.Errorf("client get without a certificate: %v; want exit status 1 and Unavailable:\n%s", err, out)
		}
		c.logf(t, "get without a client certificate: %s", lineWith(out, "client get:"))
	})

	step("no password in any log", func(t *testing.T) {
		logs := c.compose(t, 2*time.Minute, "logs", "--no-color")
		var nodeLines int
		for line := range strings.Lines(logs) {
			if strings.HasPrefix(line, "node") || strings.Contains(line, "_node_") || strings.Contains(line, "-node-") {
				nodeLines++
			}
		}
		if nodeLines == 0 {
			t.Fatalf("compose logs holds no line from a node; nothing to search:\n%s", logs)
		}
		searched := strings.Join(append(outputs, logs), "\n")
		for _, user := range []string{"root", "node", "client"} {
			data, err := os.ReadFile(filepath.Join(tlsDir, "etcd-"+user+"-password"))
			if err != nil {
				t.Fatal(err)
			}
			password := strings.TrimSpace(string(data))
			if len(password) < 16 {
				t.Fatalf("the password of etcd user %s is %d characters", user, len(password))
			}
			if strings.Contains(searched, password) {
				t.Errorf("the password of etcd user %s appears in the logs or the output of up.sh or the client", user)
			}
		}
		c.logf(t, "passwords of 3 etcd users searched for in %d bytes of logs (%d lines from nodes) and %d outputs of up.sh and the client: none found",
			len(logs), nodeLines, len(outputs))
	})

	step("down leaves nothing", c.downLeavesNothing)

	if !defaultBefore && exists(t, defaultDir) {
		t.Errorf("%s exists after the test, which set ROUTEGUIDE_TLS_DIR", defaultDir)
	}
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// exitCode is the exit status in err from running a command: 0 for nil, -1
// when it did not exit (it did not start, or was killed).
func exitCode(err error) int {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		return -1
	}
}

// lineWith is the first line of s that contains sub, or all of s.
func lineWith(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return strings.TrimSpace(line)
		}
	}
	return s
}
