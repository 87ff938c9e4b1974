package discovery

import (
	"testing"
)

// FuzzDecodeEndpoint feeds registry values of any shape to the decoder that
// the resolver and /sd use: it must never panic, must only accept values
// with a dialable address and a node id, and what it accepts must encode
// and decode back to the same endpoint.
func FuzzDecodeEndpoint(f *testing.F) {
	f.Add("routeguide/n1", []byte(`{"Op":0,"Addr":"10.0.0.1:50051","Metadata":{"node_id":"n1","metrics_addr":"10.0.0.1:9090","version":"v1"}}`))
	f.Add("routeguide/n2", []byte(`{"Op":0,"Addr":"10.0.0.2:50051"}`))
	f.Add("routeguide/n3", []byte(`{"Op":1,"Addr":"10.0.0.3:50051"}`))
	f.Add("routeguide/n4", []byte(`{"Op":0,"Addr":"[::1]:1","Metadata":"not an object"}`))
	f.Add("routeguide/", []byte(`{"Op":0,"Addr":":0"}`))
	f.Add("x", []byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		ep, err := DecodeEndpoint(key, value)
		if err != nil {
			return
		}
		if CheckAddr(ep.Addr, DialAddr) != nil {
			t.Fatalf("accepted address %q", ep.Addr)
		}
		if ep.Key != key {
			t.Fatalf("key %q became %q", key, ep.Key)
		}
		encoded, err := EncodeEndpoint(ep.Addr, ep.Metadata)
		if err != nil {
			t.Fatalf("cannot encode what was decoded: %v", err)
		}
		again, err := DecodeEndpoint(key, []byte(encoded))
		if err != nil || again != ep {
			t.Fatalf("round trip: %+v became %+v (%v)", ep, again, err)
		}
	})
}
