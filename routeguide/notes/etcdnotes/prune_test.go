package etcdnotes

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
)

// startClient starts a real etcd on an ephemeral port and returns a client
// of it; t's cleanup stops both.
func startClient(t *testing.T) *clientv3.Client {
	return etcdtest.Client(t, etcdtest.Start(t).ClientURL())
}

func testStore(t *testing.T, cli *clientv3.Client, perLocation int) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Prefix = "notes-test/" + t.Name() + "/"
	cfg.Limits.PerLocation = perLocation
	s, err := New(cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func messages(t *testing.T, s *Store, message string) []string {
	t.Helper()
	got, err := s.Post(t.Context(), &pb.RouteNote{Location: &pb.Point{Latitude: 1, Longitude: 1}, Message: message})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range got {
		out = append(out, n.Message)
	}
	return out
}

// TestAPruneLeftToTheNextPutDeletesNothingOnceWiderBoundsAreDeclared is the
// race of a deferred prune: an answer leaves the oldest note out and
// leaves its deletion to the next put there; before that put, a store with
// wider bounds declares them and answers with the note. The put must not
// delete it.
func TestAPruneLeftToTheNextPutDeletesNothingOnceWiderBoundsAreDeclared(t *testing.T) {
	cli := startClient(t)
	narrow, wide := testStore(t, cli, 2), testStore(t, cli, 8)
	messages(t, narrow, "n0")
	messages(t, narrow, "n1")
	location := narrow.LocationPrefix(1, 1)
	start, end := sequencedRange(location)
	resp, err := cli.Get(t.Context(), start, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		t.Fatal(err)
	}
	// What an answer at this revision, [n0 n1] with a bound of one, would
	// leave to the next put: the notes after n1.
	narrow.turns.at = map[string]*turn{location: {location: location, token: make(chan struct{}, 1),
		prune: &prune{after: string(resp.Kvs[0].Key), rev: resp.Header.Revision}}}
	if got := messages(t, wide, "wide"); len(got) != 3 {
		t.Fatalf("the wide store answered %q, want n0, n1 and its own", got)
	}
	messages(t, narrow, "n2") // its put carries the prune
	if got := messages(t, wide, "wide again"); len(got) != 5 || got[0] != "n0" {
		t.Errorf("after the narrow store's put the wide store answers %q, want n0 first of 5", got)
	}
	if s := narrow.Stats(); s.PrunesRefused != 1 {
		t.Errorf("stats %+v, want the prune that rode with the put refused and counted", s)
	}
}
