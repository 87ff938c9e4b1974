package e2e

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestComposeTLS brings up the secured variant, docker-compose.tls.yml, the
// way docs/DEPLOY.md documents it (deploy/tls/up.sh), with its certificates and
// passwords in a temporary directory: calls over mutual TLS succeed and are
// spread over the nodes, a client without a certificate is refused, no
// container logs an etcd password, up.sh runs again once authentication is
// on, etcd's healthchecks pass without etcd logging an unknown user (or any
// error with its stack trace), and `down -v` leaves nothing behind.
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

	c := newCluster(t, "routeguide-tls-e2e", "docker-compose.yml", "docker-compose.tls.yml")
	c.env = append(c.env,
		"ROUTEGUIDE_TLS_DIR="+tlsDir,
		"ROUTEGUIDE_TLS_PROJECT="+c.project)
	// etcd's client port requires a client certificate, and takes the user
	// from its common name: etcdctl in the members' containers shows the
	// read-only user client's (the override sets it), which reads the registry.
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow() // every step builds on the one before
		}
	}
	var nodes []node
	var outputs []string // what up.sh and the clients printed, searched for passwords too
	var authOn time.Time // when up.sh had turned etcd's authentication on

	step("up.sh with 2 nodes", func(t *testing.T) {
		start := time.Now()
		out, err := runQuiet(5*time.Minute, c.env, "bash", upScript, "--scale", "node=2")
		if err != nil {
			t.Fatalf("up.sh --scale node=2: %v\n%s", err, out)
		}
		outputs = append(outputs, out)
		authOn = time.Now()
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

	step("up.sh again, with authentication on", func(t *testing.T) {
		start := time.Now()
		out, err := runQuiet(5*time.Minute, c.env, "bash", upScript, "--scale", "node=2")
		outputs = append(outputs, out)
		if err != nil {
			t.Fatalf("up.sh --scale node=2, again: %v\n%s", err, out)
		}
		if !strings.Contains(out, "etcd authentication is on already") {
			t.Errorf("up.sh, again, did not find etcd's authentication on:\n%s", out)
		}
		if got := c.nodes(t, 2); !sameSet(ids(got), ids(nodes)) {
			t.Errorf("nodes after up.sh again: %v; want the same %v", ids(got), ids(nodes))
		}
		c.logf(t, "up.sh again, authentication on: returned after %v", since(start))
	})

	step("etcd healthchecks log no unknown user", func(t *testing.T) {
		// Wait for a passing healthcheck on every member that started after
		// authentication was on, and a few more intervals (2s) of them.
		checksAfter := authOn.Add(6 * time.Second)
		for _, svc := range []string{"etcd1", "etcd2", "etcd3"} {
			container := strings.TrimSpace(c.compose(t, time.Minute, "ps", "-q", svc))
			poll(t, time.Minute, svc+" passes a healthcheck after auth is on", func() (bool, string) {
				out := docker(t, time.Minute, "inspect", "-f",
					`{{range .State.Health.Log}}{{.Start.UnixNano}} {{.ExitCode}}{{"\n"}}{{end}}`, container)
				var last string
				for line := range strings.Lines(out) {
					f := strings.Fields(line)
					if len(f) != 2 {
						continue
					}
					last = line
					ns, err := strconv.ParseInt(f[0], 10, 64)
					if err == nil && f[1] == "0" && time.Unix(0, ns).After(checksAfter) {
						return true, ""
					}
				}
				return false, "last healthcheck (start, exit status): " + strings.TrimSpace(last)
			})
		}
		logs := c.compose(t, 2*time.Minute, "logs", "--no-color", "etcd1", "etcd2", "etcd3")
		var stackTraces int
		for line := range strings.Lines(logs) {
			if strings.Contains(line, `"stacktrace"`) {
				stackTraces++
				if stackTraces <= 3 {
					t.Errorf("etcd logged an error with a stack trace: %.300s", line)
				}
			}
		}
		for _, unknown := range []string{"cannot find a user", "user doesn't exist"} {
			if n := strings.Count(logs, unknown); n > 0 {
				t.Errorf("etcd logged %q %d times: a client (its healthcheck, or up.sh) authenticates as a user etcd does not have", unknown, n)
			}
		}
		c.logf(t, "etcd logs after up.sh twice and %v of healthchecks with authentication on: %d bytes, %d lines, %d stack traces",
			since(authOn), len(logs), strings.Count(logs, "\n"), stackTraces)
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
