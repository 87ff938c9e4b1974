package discovery

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Metadata describes a registered node to those who find it in etcd. It is
// stored as the Metadata of the endpoints value, a JSON object that other
// tools can read.
type Metadata struct {
	// NodeID names the node; it is also the last element of its key.
	NodeID string `json:"node_id"`
	// MetricsAddr is the advertised host:port of the node's metrics listener,
	// empty when it has none.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// Version is the version of the node's software.
	Version string `json:"version,omitempty"`
}

// Endpoint is one registered node, as read from the registry.
type Endpoint struct {
	// Key is the etcd key, <service>/<node id>.
	Key string
	// Addr is the gRPC address clients dial.
	Addr string
	// Metadata is what the value carries. When it carries none (a node
	// registered by another tool through etcd's endpoints package, say),
	// NodeID is taken from the key and the rest is empty.
	Metadata Metadata
}

// endpointValue is the JSON that etcd's client/v3/naming/endpoints package
// writes and reads ({"Op":0,"Addr":"...","Metadata":...}); its internal type
// cannot be imported, so the field names are repeated here and pinned by
// TestValuesAreReadableByTheUpstreamResolver.
type endpointValue struct {
	Op       uint8           `json:"Op"`
	Addr     string          `json:"Addr"`
	Metadata json.RawMessage `json:"Metadata,omitempty"`
}

// opAdd is endpoints.Add, the only operation a stored value may carry.
const opAdd = 0

// EncodeEndpoint returns the registry value for a node at addr.
func EncodeEndpoint(addr string, md Metadata) (string, error) {
	if err := CheckAddr(addr, DialAddr); err != nil {
		return "", err
	}
	raw, err := json.Marshal(md)
	if err != nil {
		return "", fmt.Errorf("encode metadata: %w", err)
	}
	value, err := json.Marshal(endpointValue{Op: opAdd, Addr: addr, Metadata: raw})
	if err != nil {
		return "", fmt.Errorf("encode endpoint: %w", err)
	}
	return string(value), nil
}

// DecodeEndpoint reads the registry value stored under key. It rejects what a
// resolver must not hand to gRPC: invalid JSON, another operation, an address
// that is not host:port. Metadata that is not a JSON object of ours is
// dropped rather than failing the endpoint, since the address alone is
// enough to serve; a missing node id is taken from the key.
func DecodeEndpoint(key string, value []byte) (Endpoint, error) {
	if !utf8.ValidString(key) {
		// Its last element would become a node id that JSON, Prometheus
		// labels and logs cannot carry as it is.
		return Endpoint{}, fmt.Errorf("registry key %q is not valid UTF-8", key)
	}
	var v endpointValue
	if err := json.Unmarshal(value, &v); err != nil {
		return Endpoint{}, fmt.Errorf("registry value under %q: %w", key, err)
	}
	if v.Op != opAdd {
		return Endpoint{}, fmt.Errorf("registry value under %q: operation %d is not Add (0)", key, v.Op)
	}
	if err := CheckAddr(v.Addr, DialAddr); err != nil {
		return Endpoint{}, fmt.Errorf("registry value under %q: %w", key, err)
	}
	ep := Endpoint{Key: key, Addr: v.Addr}
	if len(v.Metadata) > 0 && json.Unmarshal(v.Metadata, &ep.Metadata) != nil {
		ep.Metadata = Metadata{}
	}
	if ep.Metadata.NodeID == "" {
		ep.Metadata.NodeID = key[strings.LastIndexByte(key, '/')+1:]
	}
	return ep, nil
}

// Prefix is the etcd key prefix under which the nodes of service register.
func Prefix(service string) string { return service + "/" }
