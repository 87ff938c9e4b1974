package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
)

// TestANoteWhoseTurnComesAfterItsDeadlineIsRefusedWithResourceExhausted:
// a node writes --notes-write-rate notes a second to etcd at most, and a
// note whose turn would come after its call's deadline is refused at once
// with RESOURCE_EXHAUSTED and counted under its own limit.
func TestANoteWhoseTurnComesAfterItsDeadlineIsRefusedWithResourceExhausted(t *testing.T) {
	etcd := etcdtest.Start(t)
	// etcd serving before the node counts its goroutines.
	etcdtest.Get(t, etcd.ClientURL(), "ready")
	tn := startMetricsNode(t, func(c *Config) {
		c.Etcd = []string{etcd.ClientURL()}
		c.NotesWriteRate = 1
	})
	post := func(message string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		stream, err := tn.client().RouteChat(ctx)
		if err == nil {
			err = stream.Send(&pb.RouteNote{Location: &pb.Point{Latitude: 1, Longitude: 1}, Message: message})
		}
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	// One note a second: of five sent at once, the first goes through and
	// the next ones' turns come after their half second.
	refused := 0
	for i := range 5 {
		err := post("note")
		if status.Code(err) == codes.ResourceExhausted && strings.Contains(status.Convert(err).Message(), "1 notes a second") {
			refused++
		} else if err != nil && i == 0 {
			t.Fatalf("the first note: %v", err)
		}
	}
	if refused == 0 {
		t.Fatal("five notes within a few seconds at one note a second: none refused with RESOURCE_EXHAUSTED")
	}
	families := scrape(t, tn.MetricsAddr())
	if got := value(families, "routeguide_limit_rejections_total", map[string]string{"limit": "note_rate"}); got != float64(refused) {
		t.Errorf("routeguide_limit_rejections_total{limit=\"note_rate\"} = %v, want the %d refused", got, refused)
	}
}
