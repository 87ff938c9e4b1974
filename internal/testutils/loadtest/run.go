// Package loadtest runs the load generator (package load) in tests: in the
// background while a test brings faults about (Start), through a Log that
// records which node answered each call and when, so that a test can tell
// when a node stopped taking calls.
package loadtest

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/routeguide-cluster/routeguide/internal/load"
)

// Run is a load.Run in the background.
type Run struct {
	cancel context.CancelFunc
	done   chan struct{}
	stop   sync.Once
	result load.Result
	err    error
}

// Start runs cfg's load on conn until Stop, or until tb ends. cfg's
// Duration or Requests bound it still: give it room (a minute, say).
func Start(tb testing.TB, conn grpc.ClientConnInterface, cfg load.Config) *Run {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Run{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.result, r.err = load.Run(ctx, conn, cfg)
	}()
	tb.Cleanup(r.end)
	return r
}

// end stops the load and waits for its workers.
func (r *Run) end() {
	r.stop.Do(func() {
		r.cancel()
		<-r.done
	})
}

// Stop ends the load and returns what it counted; calls it cuts short count
// neither OK nor failed. An error of the run itself fails tb.
func (r *Run) Stop(tb testing.TB) load.Result {
	tb.Helper()
	r.end()
	if r.err != nil {
		tb.Fatalf("load: %v", r.err)
	}
	return r.result
}
