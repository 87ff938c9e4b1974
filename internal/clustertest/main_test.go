package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
)

// commands are the node and client commands, built once by TestMain.
var commands testutils.Commands

func TestMain(m *testing.M) {
	os.Exit(testutils.RunWithBuilds(m, func(dir string) (err error) {
		commands, err = testutils.BuildCommands(dir)
		return err
	}))
}

// standalone are the arguments that keep a node off fixed ports and etcd;
// a test's own arguments come after them and win.
var standalone = []string{"--listen=127.0.0.1:0", "--etcd=", "--metrics-listen="}

// command prepares the node binary with env added to an environment cleared
// of ROUTEGUIDE_ variables, so the tests do not depend on the caller's.
func command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	return commandOf(ctx, commands.Node, env, args...)
}

// commandOf is command for the node binary at bin.
func commandOf(ctx context.Context, bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, append(slices.Clone(standalone), args...)...)
	cmd.Env = environ(env...)
	return cmd
}

// environ is this process's environment without its ROUTEGUIDE_ variables,
// and env.
func environ(env ...string) []string {
	var all []string
	for _, v := range os.Environ() {
		if !strings.HasPrefix(v, "ROUTEGUIDE_") {
			all = append(all, v)
		}
	}
	return append(all, env...)
}

// runToExit runs a node that is expected to exit on its own.
func runToExit(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := command(ctx, env, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run node: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// checkOneLine fails t unless stderr is exactly one "node: " line containing want.
func checkOneLine(t *testing.T, stderr, want string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "node: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") ||
		!strings.Contains(stderr, want) {
		t.Errorf("stderr = %q, want one line starting with \"node: \" and containing %q", stderr, want)
	}
}

func TestUsageErrorsExit2WithOneLine(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"--lease"}, "-lease"},
		{"bad flag value", nil, []string{"--lease-ttl", "soon"}, "-lease-ttl"},
		{"bad environment value", []string{"ROUTEGUIDE_LEASE_TTL=soon"}, nil, "ROUTEGUIDE_LEASE_TTL"},
		{"bad log format", nil, []string{"--log-format=xml"}, "-log-format"},
		{"bad log level from the environment", []string{"ROUTEGUIDE_LOG_LEVEL=loud"}, nil, "ROUTEGUIDE_LOG_LEVEL"},
		{"value that fails validation", nil, []string{"--lease-ttl=100ms"}, "--lease-ttl"},
		{"bad listen address", nil, []string{"--listen=nowhere"}, "--listen"},
		{"stray argument before flags", nil, []string{"extra-arg", "--etcd=", "--lease-ttl=soon"}, `unexpected argument "extra-arg"`},
		{"dev-nodes without dev", nil, []string{"--dev-nodes=2"}, "--dev-nodes: needs --dev"},
		{"dev-nodes without dev, from the environment", []string{"ROUTEGUIDE_DEV_NODES=2"}, nil, "--dev-nodes: needs --dev"},
		{"dev etcd address without dev", nil, []string{"--dev-etcd-listen=127.0.0.1:0"}, "--dev-etcd-listen: needs --dev"},
		{"bad dev etcd address", nil, []string{"-dev", "--dev-etcd-listen=nowhere"}, "--dev-etcd-listen"},
		{"dev etcd on every interface", nil, []string{"-dev", "--dev-etcd-listen=:2379"}, `--dev-etcd-listen: ":2379" is not a loopback address`},
		{"dev etcd on a network address, from the environment", []string{"ROUTEGUIDE_DEV_ETCD_LISTEN=0.0.0.0:0"}, []string{"-dev"}, "add --dev-etcd-insecure-listen"},
		{"TLS reload interval too short", nil, []string{"--tls-reload-interval=1ms"}, "--tls-reload-interval: 1ms is not between 10ms and 24h0m0s"},
		{"insecure dev etcd without dev", nil, []string{"--dev-etcd-insecure-listen"}, "--dev-etcd-insecure-listen: needs --dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runToExit(t, tt.env, tt.args...)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			checkOneLine(t, stderr, tt.want)
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

func TestHelpPrintsUsageAndExits0(t *testing.T) {
	code, stdout, stderr := runToExit(t, nil, "-h")
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	for _, want := range []string{"-lease-ttl", "-max-notes-bytes", "ROUTEGUIDE_LEASE_TTL"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("usage does not mention %s:\n%s", want, stdout)
		}
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want nothing", stderr)
	}
}

func TestRuntimeErrorsExit1WithOneLine(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	dir := t.TempDir()
	badJSON := filepath.Join(dir, "bad.json")
	data := `[
  {"location": {"latitude": 1, "longitude": 2}, "name": "a"},
  {"location": {"latitude": 1, "longitude": 2}, "name": "b",}
]`
	if err := os.WriteFile(badJSON, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.json")

	tests := []struct {
		name  string
		args  []string
		wants []string
	}{
		{"port in use", []string{"--listen", taken.Addr().String()}, []string{taken.Addr().String()}},
		{"invalid features file", []string{"--features", badJSON}, []string{badJSON, "line 3"}},
		{"missing features file", []string{"--features", missing}, []string{missing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runToExit(t, nil, tt.args...)
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			for _, want := range tt.wants {
				checkOneLine(t, stderr, want)
			}
		})
	}
}

// process is a running node whose stderr is read as JSON log records.
type process struct {
	cmd *exec.Cmd
	// ctx ends 30s after the start: the time a test waits for the node's
	// log records. The node itself runs until the test ends.
	ctx     context.Context
	records chan map[string]any
	lines   []string         // every stderr line, once records is closed
	logged  []map[string]any // the records read so far
}

// startServing starts a standalone node that logs JSON and returns once it
// logs that it is serving, with the address it serves on.
func startServing(t testing.TB, args ...string) (*process, string) {
	t.Helper()
	return startServingWith(t, nil, args...)
}

// startServingWith is startServing with env added to the node's environment.
func startServingWith(t testing.TB, env []string, args ...string) (*process, string) {
	t.Helper()
	return startServingBinary(t, commands.Node, env, args...)
}

// startServingBinary is startServingWith for the node binary at bin.
func startServingBinary(t testing.TB, bin string, env []string, args ...string) (*process, string) {
	t.Helper()
	life, kill := context.WithCancel(t.Context())
	t.Cleanup(kill) // kills the node if the test ends early
	ctx, cancel := context.WithTimeout(life, 30*time.Second)
	t.Cleanup(cancel)
	// The log format comes from the environment, to show it is read.
	env = append([]string{"ROUTEGUIDE_LOG_FORMAT=json"}, env...)
	p := &process{cmd: commandOf(life, bin, env, args...), ctx: ctx, records: make(chan map[string]any)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.records)
		scanner := bufio.NewScanner(stderr)
		forward := true // until no one waits for records any more
		for scanner.Scan() {
			p.lines = append(p.lines, scanner.Text())
			var record map[string]any
			if !forward || json.Unmarshal(scanner.Bytes(), &record) != nil {
				continue // read on, so that the node never blocks on its log
			}
			select {
			case p.records <- record:
			case <-ctx.Done():
				forward = false
			}
		}
	}()
	addr, _ := p.waitFor(t, "serving")["addr"].(string)
	return p, addr
}

// next returns the next log record, or nil at the end of stderr.
func (p *process) next(t testing.TB) map[string]any {
	t.Helper()
	select {
	case r, ok := <-p.records:
		if ok {
			p.logged = append(p.logged, r)
		}
		return r
	case <-p.ctx.Done():
		t.Fatalf("no log record in time; logged %v", p.logged)
		return nil
	}
}

// waitFor reads records until one says msg.
func (p *process) waitFor(t testing.TB, msg string) map[string]any {
	t.Helper()
	for {
		r := p.next(t)
		if r == nil {
			t.Fatalf("node ended before logging %q; logged %v", msg, p.logged)
		}
		if r["msg"] == msg {
			return r
		}
	}
}

// wait reads stderr to its end and waits for the node to exit.
func (p *process) wait(t *testing.T) error {
	t.Helper()
	for p.next(t) != nil {
	}
	return p.cmd.Wait()
}

// kill kills the node and waits for it to exit, its stderr read to the end.
func (p *process) kill() {
	p.cmd.Process.Kill()
	for range p.records { // the reader closes records at the end of stderr
	}
	p.cmd.Wait()
}

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

func TestStandaloneNodeServesAndDrainsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p, addr := startServing(t, "--node-id=n1", "--drain-delay=100ms", "--shutdown-timeout=5s")
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if id, err := getFeature(ctx, grpctest.Dial(t, addr)); err != nil || id != "n1" {
				t.Fatalf("GetFeature answered by %q, %v; want answered by n1", id, err)
			}
			p.signal(t, sig)
			if err := p.wait(t); err != nil {
				t.Fatalf("node after %v: %v; stderr:\n%s", sig, err, strings.Join(p.lines, "\n"))
			}
			if len(p.logged) != len(p.lines) {
				t.Errorf("stderr has lines that are not JSON records:\n%s", strings.Join(p.lines, "\n"))
			}
			var messages []string
			for _, r := range p.logged {
				messages = append(messages, fmt.Sprint(r["msg"]))
				if r["node_id"] != "n1" {
					t.Errorf("record %v has no node_id n1", r)
				}
			}
			for _, want := range []string{"serving", "draining", "stopped"} {
				if !slices.Contains(messages, want) {
					t.Errorf("logged %q, want a %q record", messages, want)
				}
			}
		})
	}
}

func TestSecondSignalKillsADrainingNode(t *testing.T) {
	p, _ := startServing(t, "--drain-delay=1h")
	p.signal(t, syscall.SIGTERM)
	p.waitFor(t, "draining")
	p.signal(t, syscall.SIGTERM)
	err := p.wait(t)
	// Killed by the test's deadline instead, it would show SIGKILL.
	if status, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !status.Signaled() || status.Signal() != syscall.SIGTERM {
		t.Errorf("node after a second SIGTERM: %v, want killed by SIGTERM", err)
	}
}
