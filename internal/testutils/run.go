package testutils

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Runner runs until its context ends and says when it is ready: a node
// (node.Node), for one.
type Runner interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{}
}

// Running is a Runner that Run started.
type Running struct {
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // what Run returned, once done is closed
	once    sync.Once
	stopped bool // Stop was called: the caller judges the error
}

// Run runs r until Stop, or until tb ends, and returns once r is ready. It
// fails tb if r's Run returns before, or r is not ready within 30s. At the
// end of tb, an error of a Run that no one stopped fails tb.
func Run(tb testing.TB, name string, r Runner) *Running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	run := &Running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		run.err = r.Run(ctx)
	}()
	tb.Cleanup(func() {
		if !run.stopped {
			if err := run.end(); err != nil {
				tb.Errorf("%s: %v", name, err)
			}
		}
	})
	select {
	case <-r.Ready():
	case <-run.done:
		tb.Fatalf("%s stopped before it was ready: %v", name, run.err)
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s not ready within 30s", name)
	}
	return run
}

// Stop ends the Runner's context and returns what its Run returned, the
// same at every call.
func (r *Running) Stop() error {
	r.stopped = true
	return r.end()
}

func (r *Running) end() error {
	r.once.Do(r.cancel)
	<-r.done
	return r.err
}
