package loadtest

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/routeguide-cluster/routeguide/internal/load"
)

// Log is a connection that notes, for every unary call, when it started and
// ended and which node answered it (from the routeguide-node header).
// Streams pass through unlogged.
type Log struct {
	grpc.ClientConnInterface
	mu      sync.Mutex
	answers []answer
}

type answer struct {
	node    string
	started time.Time // when the call was made
	at      time.Time // when its answer was back
}

// NewLog logs the calls made through conn.
func NewLog(conn grpc.ClientConnInterface) *Log { return &Log{ClientConnInterface: conn} }

// Invoke makes the call and notes who answered.
func (l *Log) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	var header, trailer metadata.MD
	started := time.Now()
	err := l.ClientConnInterface.Invoke(ctx, method, args, reply, append(opts, grpc.Header(&header), grpc.Trailer(&trailer))...)
	if id := load.NodeOf(header, trailer); id != "" {
		l.mu.Lock()
		l.answers = append(l.answers, answer{node: id, started: started, at: time.Now()})
		l.mu.Unlock()
	}
	return err
}

// Count counts the calls node answered after from and before to; an empty
// node means any node, a zero to means now.
func (l *Log) Count(node string, from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.answers {
		if (node == "" || a.node == node) && a.at.After(from) && (to.IsZero() || a.at.Before(to)) {
			n++
		}
	}
	return n
}

// StartedAfter counts the calls node answered that were made after t. A
// node that has exited can answer none of them, whereas a call it answered
// just before can still come back to its caller after the exit: the
// caller's goroutine may run late.
func (l *Log) StartedAfter(node string, t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.answers {
		if a.node == node && a.started.After(t) {
			n++
		}
	}
	return n
}

// First is when node answered its first call, or the zero time.
func (l *Log) First(node string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.answers {
		if a.node == node {
			return a.at
		}
	}
	return time.Time{}
}

// Last is when node answered its last call, or the zero time.
func (l *Log) Last(node string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range slices.Backward(l.answers) {
		if a.node == node {
			return a.at
		}
	}
	return time.Time{}
}
