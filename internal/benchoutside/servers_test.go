package benchoutside_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// server is one server process under load.
type server struct {
	name        string
	addr        string
	metricsAddr string // the node's metrics (and, with debug, pprof) listener; "" for the example server
	cmd         *exec.Cmd
}

// startOfficial runs grpc-go's example server over the canonical features.
func startOfficial(tb testing.TB) *server {
	addr := grpctest.FreeAddr(tb)
	_, port, _ := net.SplitHostPort(addr)
	// It listens on localhost:PORT, which resolves to 127.0.0.1 here.
	return startProcess(tb, "official", addr, "", bin.official, "-port", port, "-json_db_file", served.file)
}

// startNode runs a node binary standalone, metrics on, over the canonical
// features. debug also serves pprof on its metrics listener.
func startNode(tb testing.TB, name, binary string, debug bool) *server {
	addr, metrics := grpctest.FreeAddr(tb), grpctest.FreeAddr(tb)
	return startProcess(tb, name, addr, metrics, binary, "--listen", addr, "--etcd=",
		"--metrics-listen", metrics, "--features", served.file,
		"--drain-delay", "0s", "--node-id", name, "--debug-endpoints="+strconv.FormatBool(debug))
}

func startProcess(tb testing.TB, name, addr, metricsAddr, binary string, args ...string) *server {
	tb.Helper()
	cmd := exec.Command(binary, args...)
	stderr, err := os.Create(filepath.Join(tb.TempDir(), name+".stderr"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); stderr.Close(); close(exited) }()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	poll.Until(tb, 30*time.Second, name+" listening on "+addr, func() bool {
		select {
		case <-exited:
			log, _ := os.ReadFile(stderr.Name())
			tb.Fatalf("%s exited before it listened: %s", name, log)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return &server{name: name, addr: addr, metricsAddr: metricsAddr, cmd: cmd}
}

// cpu is the CPU time, user and system, the process has used so far, from
// /proc/PID/stat, in clock ticks of 10 ms: runs last long enough.
func (s *server) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s's CPU time: %v", s.name, err) // CI must measure, not skip
		}
		tb.Skipf("%s's CPU time: %v", s.name, err)
	}
	// The fields after the command name, in parentheses: utime is the 14th
	// field of the line, stime the 15th.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("parse /proc/%d/stat: %q", s.cmd.Process.Pid, data)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
}

// loadAverage is the first field of /proc/loadavg, reported beside every
// figure: on a shared machine it says how far to trust it.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(data))[0]
}

// startBenchServer runs a server of the in-process benchmark's test binary
// (go test -c ./internal/node), as BenchmarkGetFeatureVsCanonical does: kind
// is canonical, service or node, over the first 100 built-in features.
func startBenchServer(tb testing.TB, kind, testBinary string) *server {
	tb.Helper()
	cmd := exec.Command(testBinary, "-test.run=^TestServeForBenchmark$")
	cmd.Env = append(os.Environ(), "ROUTEGUIDE_BENCH_SERVER="+kind)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start the benchmark's %s: %v", kind, err)
	}
	tb.Cleanup(func() {
		stdin.Close() // it serves until its stdin closes
		go io.Copy(io.Discard, stdout)
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("the benchmark's %s wrote no address: %v", kind, err)
	}
	return &server{name: "bench-" + kind, addr: strings.TrimSpace(line), cmd: cmd}
}

// syscalls is how many read and write system calls the process has made so
// far, from /proc/PID/io: per call, they say how many calls each wake-up of
// the server's transport serves.
func (s *server) syscalls(tb testing.TB) (reads, writes int64) {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", s.cmd.Process.Pid))
	if err != nil {
		return 0, 0 // not readable here: the columns stay empty
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, value, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(value, 10, 64)
		switch name {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}
