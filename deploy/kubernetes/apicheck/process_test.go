package apicheck

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// process is a server the test started, with its output in a file.
type process struct {
	name   string
	log    string
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// startProcess starts bin with args, its output going to a file in dir,
// and stops it when t ends: SIGTERM, then SIGKILL after 10s. It waits for
// the process to exit either way, so that none outlives the test.
func startProcess(t *testing.T, dir, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop within 10s of SIGTERM; killing it", name)
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// running returns an error, with the end of its log, if the process exited.
func (p *process) running() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
	default:
		return nil
	}
}

// tail is the end of the process's log.
func (p *process) tail() string {
	data, _ := os.ReadFile(p.log)
	const max = 4000
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return string(data)
}

// waitReady calls ready until it returns nil, failing t if the process
// exits first or the deadline passes.
func (p *process) waitReady(t *testing.T, within time.Duration, ready func() error) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for {
		if err := p.running(); err != nil {
			t.Fatal(err)
		}
		err := ready()
		if err == nil {
			t.Logf("%s ready after %v", p.name, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v: %v\n%s", p.name, within, err, p.tail())
		}
		time.Sleep(50 * time.Millisecond) // the poll's interval
	}
}

// freePort returns a port on 127.0.0.1 that nothing listens on now. A
// server started on it at once finds it free but for a rare race, which
// shows as that server exiting with "address already in use".
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
