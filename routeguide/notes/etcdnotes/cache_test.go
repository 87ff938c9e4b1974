package etcdnotes

import (
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
)

func TestCacheHoldsAtMostItsBytesAndNamesAValueByKeyAndRevision(t *testing.T) {
	const limit = 10 << 10
	c := newCache(limit)
	value, err := proto.Marshal(&pb.RouteNote{Location: &pb.Point{Latitude: 1, Longitude: 1}, Message: strings.Repeat("x", 1000)})
	if err != nil {
		t.Fatal(err)
	}
	kv := func(i int, rev int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: fmt.Appendf(nil, "k%d", i), Value: value, ModRevision: rev}
	}
	for i := range 100 {
		if got := c.put(kv(i, 1), 1, 1); got.note == nil || got.note.Message != strings.Repeat("x", 1000) {
			t.Fatalf("put %d returned %+v", i, got)
		}
		if c.bytes > limit {
			t.Fatalf("after %d puts the cache holds %d bytes, over its %d", i+1, c.bytes, limit)
		}
	}
	if c.get(kv(0, 1)) != nil || c.get(kv(99, 1)) == nil {
		t.Error("the cache kept the oldest entry or lost the newest")
	}
	// The same key written again is another value.
	if c.get(kv(99, 2)) != nil {
		t.Error("the cache answered a key at a revision it never saw")
	}
	if got := c.put(&mvccpb.KeyValue{Key: []byte("elsewhere"), Value: value, ModRevision: 1}, 2, 2); got.note != nil {
		t.Error("a note of another location was cached as a note")
	}
	if none := newCache(0); none.put(kv(1, 1), 1, 1).note == nil || none.get(kv(1, 1)) != nil || none.bytes != 0 {
		t.Error("a cache of 0 bytes kept a note")
	}
}
