package etcdnotes

import (
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestABatchIsOneTransactionEtcdTakes guards what etcd refuses in one
// transaction, which would fail every post of the batch: more than 128
// operations in a branch, one key put twice, and a lease that is gone.
func TestABatchIsOneTransactionEtcdTakes(t *testing.T) {
	withID := func(id string, lease clientv3.LeaseID) *pendingPut {
		return &pendingPut{value: "note", lease: lease, idKey: id}
	}
	tests := []struct {
		name    string
		waiting []*pendingPut
		want    []int // batch sizes, in turn, until none waits
	}{
		{"notes with ids, two operations each", func() (w []*pendingPut) {
			for i := range 100 {
				w = append(w, withID(fmt.Sprint("id", i), 1))
			}
			return w
		}(), []int{63, 37}},
		{"the same id twice", []*pendingPut{withID("a", 1), withID("b", 1), withID("a", 1)}, []int{2, 1}},
		{"another lease", []*pendingPut{withID("", 1), withID("", 1), withID("", 2), withID("", 1)}, []int{2, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ts turns
			tu := &turn{waiting: tt.waiting}
			var got []int
			for len(tu.waiting) > 0 && len(got) < 10 {
				got = append(got, len(ts.takeBatch(tu)))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("batches of %v, want %v", got, tt.want)
			}
		})
	}
}
