package benchpeers_test

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/loadtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// The experiment's pauses. They are not waits for something to be ready:
// how long the load runs on after a fault is what is being measured.
const (
	warmCalls    = 3000            // calls over all three nodes before the first fault
	afterSIGTERM = 3 * time.Second // load after the SIGTERMed node has exited, before the SIGKILL
	afterExpiry  = 2 * time.Second // load after the SIGKILLed node's key has expired
)

// faultRun is what one framework's client saw under load while one node
// was SIGTERMed and, later, another SIGKILLed.
type faultRun struct {
	name                   string
	calls                  int
	qps                    float64
	failedBefore           int
	failedTerm, failedKill int            // from each signal until the next phase
	codesTerm, codesKill   map[string]int // the same, by code
	termExit               string         // how the SIGTERMed node ended
	termTook               time.Duration  // from SIGTERM to its exit
	keyExpired             time.Duration  // from SIGKILL until the killed node's key left etcd
}

// TestPeersUnderFaults runs GetFeature from 16 callers (5s deadline each)
// against each framework's cluster in turn; SIGTERMs one node and waits for
// it to exit, lets the load run on, SIGKILLs another and waits for its key
// to expire from etcd, and lets the load run on. It counts the calls that
// failed after each signal and prints the table of docs/BENCHMARKS.md. It
// asserts our count only, which must be 0; the peers' are reported.
func TestPeersUnderFaults(t *testing.T) {
	etcd := etcdtest.Start(t)
	kv := etcdtest.Client(t, etcd.ClientURL())
	var runs []faultRun
	for _, fw := range frameworks {
		t.Run(fw.name, func(t *testing.T) {
			r := underFaults(t, startCluster(t, fw, etcd, kv))
			runs = append(runs, r)
			if fw.name == "ours" && r.failedBefore+r.failedTerm+r.failedKill != 0 {
				t.Errorf("ours: %d calls failed before the faults, %d after SIGTERM (%v), %d after SIGKILL (%v); want 0",
					r.failedBefore, r.failedTerm, r.codesTerm, r.failedKill, r.codesKill)
			}
		})
	}
	printFaultTable(os.Stdout, runs)
}

func underFaults(t *testing.T, c *cluster) faultRun {
	t.Helper()
	r := faultRun{name: c.fw.name}
	calls := &callLog{ClientConnInterface: c.conn}
	// Two minutes bound the run; the test ends it well before.
	run := loadtest.Start(t, calls, load.Config{RPC: load.Get, Concurrency: callers, Duration: 2 * time.Minute, Timeout: 5 * time.Second})
	poll.Until(t, 30*time.Second, fmt.Sprintf("%d calls before the first fault", warmCalls), func() bool { return calls.calls.Load() >= warmCalls })

	terminated, killed := c.nodes[0], c.nodes[1]
	termAt := time.Now()
	terminated.signal(t, syscall.SIGTERM)
	r.termExit = exitOf(terminated.wait(t, 30*time.Second))
	r.termTook = time.Since(termAt)
	poll.Until(t, 15*time.Second, terminated.name+"'s key to leave etcd", func() bool { return !c.isRegistered(t, terminated) })
	time.Sleep(afterSIGTERM) // the experiment: load on the two nodes left

	killAt := time.Now()
	killed.signal(t, syscall.SIGKILL)
	killed.wait(t, 10*time.Second)
	poll.Until(t, 30*time.Second, killed.name+"'s key to expire", func() bool { return !c.isRegistered(t, killed) })
	r.keyExpired = time.Since(killAt)
	time.Sleep(afterExpiry) // the experiment: load on the one node left

	endAt := time.Now()
	res := run.Stop(t)
	// Calls cut short by the stop end after endAt and are not counted.
	r.calls, r.qps = res.OK+res.Failed, res.QPS
	r.failedBefore, _ = calls.failed(time.Time{}, termAt)
	r.failedTerm, r.codesTerm = calls.failed(termAt, killAt)
	r.failedKill, r.codesKill = calls.failed(killAt, endAt)
	t.Logf("%s: %d calls, %d failed after SIGTERM %v, %d after SIGKILL %v; SIGTERMed node: %s after %v; killed node's key expired after %v",
		r.name, r.calls, r.failedTerm, r.codesTerm, r.failedKill, r.codesKill, r.termExit, r.termTook.Round(time.Millisecond), r.keyExpired.Round(time.Millisecond))
	return r
}

// exitOf says how a node process ended, from its Wait error.
func exitOf(err error) string {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return "exit 0"
	case errors.As(err, &exit):
		return exit.ProcessState.String()
	default:
		return err.Error()
	}
}

func printFaultTable(w io.Writer, runs []faultRun) {
	fmt.Fprintf(w, "\nPeers under faults: GetFeature, %d callers, 3 nodes each; load average %s\n", callers, loadAverage())
	fmt.Fprintln(w, "| framework | calls | failed before | failed after SIGTERM | failed after SIGKILL | SIGTERMed node | SIGKILLed node's key expired after |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range runs {
		fmt.Fprintf(w, "| %s | %d | %d | %d%s | %d%s | %s after %v | %v |\n", r.name, r.calls, r.failedBefore,
			r.failedTerm, codesOf(r.codesTerm), r.failedKill, codesOf(r.codesKill),
			r.termExit, r.termTook.Round(10*time.Millisecond), r.keyExpired.Round(100*time.Millisecond))
	}
}

// codesOf lists failures by code, " (Unavailable 12)", or "" for none.
func codesOf(byCode map[string]int) string {
	if len(byCode) == 0 {
		return ""
	}
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(byCode)) {
		parts = append(parts, fmt.Sprintf("%s %d", code, byCode[code]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
