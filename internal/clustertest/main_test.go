package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
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
	for _, v := range os.Environ() {
		if !strings.HasPrefix(v, "ROUTEGUIDE_") {
			cmd.Env = append(cmd.Env, v)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
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
			getFeature(t, addr, "n1")
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

// getFeature makes one GetFeature call to addr and checks that nodeID answered.
func getFeature(t *testing.T, addr, nodeID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var header metadata.MD
	_, err = pb.NewRouteGuideClient(conn).GetFeature(ctx, &pb.Point{Latitude: 409146138, Longitude: -746188906}, grpc.Header(&header))
	if err != nil {
		t.Fatalf("GetFeature: %v", err)
	}
	if got := header.Get(contract.NodeHeader); !slices.Equal(got, []string{nodeID}) {
		t.Errorf("%s header = %q, want %q", contract.NodeHeader, got, nodeID)
	}
}

func TestFlagsAndEnvironmentFillTheConfig(t *testing.T) {
	env := map[string]string{
		"ROUTEGUIDE_ETCD":            "http://a:2379, http://b:2379",
		"ROUTEGUIDE_MAX_NOTES_BYTES": "5000",
		"ROUTEGUIDE_LOG_LEVEL":       "debug",
		"ROUTEGUIDE_OTLP_ENDPOINT":   "jaeger:4317",
	}
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	cfg, opts, err := parseConfig([]string{"--max-notes-bytes=6000", "--drain-delay=0s"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Etcd, []string{"http://a:2379", "http://b:2379"}) {
		t.Errorf("Etcd = %q", cfg.Etcd)
	}
	if cfg.NoteLimits.Bytes != 6000 || cfg.DrainDelay != 0 || opts.log.level.String() != "DEBUG" || opts.log.format != "text" || cfg.OTLPEndpoint != "jaeger:4317" {
		t.Errorf("got %+v, %+v", cfg, opts)
	}
	if def := node.DefaultConfig(); cfg.LeaseTTL != def.LeaseTTL || cfg.Listen != def.Listen {
		t.Errorf("defaults not kept: %+v", cfg)
	}

	env = map[string]string{"ROUTEGUIDE_ETCD": ""}
	if cfg, _, err = parseConfig(nil, lookup, io.Discard); err != nil || len(cfg.Etcd) != 0 {
		t.Errorf("ROUTEGUIDE_ETCD= gave Etcd %q, %v; want none (standalone)", cfg.Etcd, err)
	}
}

// TestEveryValidatedFieldHasItsFlag guards that the flag names Validate puts
// in its errors are the flags that set those fields.
func TestEveryValidatedFieldHasItsFlag(t *testing.T) {
	bad := map[string]string{
		"listen":                 "nowhere",
		"advertise":              ":50051",
		"advertise-network":      "10.20.0.0",
		"metrics-listen":         "nowhere",
		"service":                "",
		"lease-ttl":              "10ms",
		"drain-delay":            "-1s",
		"shutdown-timeout":       "0s",
		"max-msg-size":           "10",
		"max-route-points":       "-1",
		"max-chat-notes":         "-1",
		"max-notes-per-location": "-1",
		"max-notes-bytes":        "-1",
		"max-note-bytes":         "0",
		"notes-max-age":          "10ms",
		"tls-cert":               "/cert.pem", // without its key
		"tls-key":                "/key.pem",  // without its certificate
		"tls-client-ca":          "/ca.pem",   // without a server certificate
		"etcd-cert":              "/cert.pem",
		"etcd-key":               "/key.pem",
		"etcd-username":          "node",   // without a password
		"otlp-endpoint":          "jaeger", // without a port
	}
	for flag, value := range bad {
		_, _, err := parseConfig([]string{"--" + flag + "=" + value}, func(string) (string, bool) { return "", false }, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), "--"+flag+":") {
			t.Errorf("--%s=%q: error %v, want one naming --%s", flag, value, err, flag)
		}
	}
}

// TestDevEtcdListensBeyondThisHostOnlyWhenAskedTo: the development etcd has
// no TLS and no users, so it listens on loopback addresses only, unless
// --dev-etcd-insecure-listen (or its variable) says otherwise. Checked on
// the parsed flags: a test listens on no address other hosts reach.
func TestDevEtcdListensBeyondThisHostOnlyWhenAskedTo(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		ok   bool
	}{
		{[]string{"-dev", "--dev-etcd-listen=127.0.0.2:2379"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=[::1]:2379"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=localhost:2379"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=0.0.0.0:2379"}, nil, false},
		{[]string{"-dev", "--dev-etcd-listen=192.0.2.1:2379"}, nil, false},
		{[]string{"-dev", "--dev-etcd-listen=etcd.example:2379"}, nil, false},
		{[]string{"-dev", "--dev-etcd-listen=0.0.0.0:2379", "--dev-etcd-insecure-listen"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=:2379"}, map[string]string{"ROUTEGUIDE_DEV_ETCD_INSECURE_LISTEN": "true"}, true},
	}
	for _, tt := range tests {
		lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
		_, opts, err := parseConfig(tt.args, lookup, io.Discard)
		if (err == nil) != tt.ok {
			t.Errorf("%v %v: error %v; want accepted %t", tt.args, tt.env, err, tt.ok)
		}
		if err == nil && opts.devEtcdListen != strings.TrimPrefix(tt.args[1], "--dev-etcd-listen=") {
			t.Errorf("%v: dev etcd listens on %q", tt.args, opts.devEtcdListen)
		}
	}
}
