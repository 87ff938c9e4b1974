package etcdnotes

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

// TestNotesOfALaterBucketAreOnLeasesGrantedLaterWhicheverStorePosts drives
// the clock of two stores through two buckets. Store A grants a lease early
// in the first bucket, B late in it; A's next note, in the second bucket,
// must be on a lease granted after B's note was posted, or it would expire
// before that older note (every lease has the same TTL).
func TestNotesOfALaterBucketAreOnLeasesGrantedLaterWhicheverStorePosts(t *testing.T) {
	cli := startClient(t)
	cfg := DefaultConfig()
	cfg.Prefix = "notes-test/" + t.Name() + "/"
	cfg.MaxAge = 80 * time.Second
	bucket := cfg.MaxAge / LeaseBuckets
	var clock atomic.Int64 // nanoseconds since the bucket began
	bucketStart := time.Now().Truncate(bucket)
	now := func() time.Time { return bucketStart.Add(time.Duration(clock.Load())) }
	var stores []*Store
	for range 2 {
		s, err := New(cli, cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.now = now
		stores = append(stores, s)
	}
	post := func(store int, at time.Duration, message string) clientv3.LeaseID {
		t.Helper()
		clock.Store(int64(at))
		if _, err := stores[store].Post(t.Context(), &pb.RouteNote{Location: &pb.Point{Latitude: 1, Longitude: 1}, Message: message}); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(t.Context(), stores[store].LocationPrefix(1, 1)+sequencedMark, clientv3.WithRange(stores[store].LocationPrefix(1, 1)+sequencedEnd), clientv3.WithLimit(1))
		if err != nil {
			t.Fatal(err)
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	first := post(0, bucket/5, "A early in the first bucket")
	if again := post(0, bucket/2, "A again in the first bucket"); again != first {
		t.Errorf("A's notes of one bucket are on leases %x and %x, want one", first, again)
	}
	post(1, bucket*9/10, "B late in the first bucket")
	before, err := cli.Leases(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	later := post(0, bucket*11/10, "A in the second bucket")
	if slices.ContainsFunc(before.Leases, func(l clientv3.LeaseStatus) bool { return l.ID == later }) {
		t.Errorf("A's note of the second bucket is on lease %x, granted before B's note of the first bucket was posted", later)
	}
}
