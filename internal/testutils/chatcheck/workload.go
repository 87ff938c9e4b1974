package chatcheck

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// Workload is what the clients of a history do: each posts, one note at a
// time, a note of its own (its id and a sequence number, padded to a length
// of its choice so that the byte bound forgets a varying number of notes)
// at a location it picks at random, named by a note id of its own
// (contract.NoteIDHeader) that a retry sends again.
type Workload struct {
	Clients   int
	Locations []*pb.Point
	// MaxPad is the most padding a message gets, up to its --max-note-bytes.
	MaxPad int
	// Timeout bounds one post; past it the outcome is unknown.
	Timeout time.Duration
	// Retry makes a client post a note again, once, under the same note
	// id, when the outcome of its post was unknown, as a client that wants
	// its note stored does.
	Retry bool
	// Posts is how many notes each client posts; 0 means until Stop.
	Posts int
	// Stop, once closed, stops each client after its current post: a
	// history that ends so has no post cut short by its end.
	Stop <-chan struct{}
}

// Run runs the clients until Stop is closed or each has made its Posts,
// client i through conns[i%len(conns)], and records every post in r. Ending
// ctx cuts the posts short. Run returns once every client has stopped.
func (w Workload) Run(ctx context.Context, r *Recorder, conns []grpc.ClientConnInterface, seed uint64) {
	// Note ids are kept per location for as long as the note: the run's
	// own part keeps them apart from another run's at the same location.
	run := rand.Uint64()
	var wg sync.WaitGroup
	for c := range w.Clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			conn := conns[c%len(conns)]
			for seq := 0; !w.stopped(ctx) && (w.Posts == 0 || seq < w.Posts); seq++ {
				at := w.Locations[rng.IntN(len(w.Locations))]
				message := fmt.Sprintf("c%d-%d", c, seq)
				if w.MaxPad > 0 {
					message += strings.Repeat(".", rng.IntN(w.MaxPad+1))
				}
				id := fmt.Sprintf("r%x-c%d-%d", run, c, seq)
				op := w.post(ctx, r, conn, c, at, message, id, false)
				if op.Outcome == Unknown && w.Retry && w.backOff(ctx) {
					op = w.post(ctx, r, conn, c, at, message, id, true)
				}
				if op.Outcome != Acked {
					w.backOff(ctx)
				}
			}
		})
	}
	wg.Wait()
}

// backOff waits a little after a failed post, as a client does: a node
// that fails posts at once would otherwise take thousands of them in a
// few seconds. It reports false if the client must stop instead.
func (w Workload) backOff(ctx context.Context) bool {
	t := time.NewTimer(failureBackOff)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.Stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// failureBackOff is how long a client waits after a failed post.
const failureBackOff = 100 * time.Millisecond

func (w Workload) stopped(ctx context.Context) bool {
	select {
	case <-w.Stop:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

func (w Workload) post(ctx context.Context, r *Recorder, conn grpc.ClientConnInterface, client int, at *pb.Point, message, id string, retry bool) Op {
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, contract.NoteIDHeader, id)
	return r.Post(ctx, conn, client, at, message, retry)
}
