package xdsserver

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/routeguide-cluster/routeguide/discovery"
)

// BootstrapConfig is what a client's xDS bootstrap file says (gRFC A27).
type BootstrapConfig struct {
	// Servers are the xDS servers' host:port (a DNS name that resolves to
	// every node, in compose, say): gRPC uses the first, and grpc-go falls
	// back to the next while the first is out of reach (gRFC A71).
	Servers []string
	// NodeID names the client to the servers, for their logs.
	NodeID string
	// TLS, when set, reaches the servers over TLS (gRFC A65); the files
	// are read by the client. Nil means plaintext.
	TLS *BootstrapTLS
}

// BootstrapTLS names the PEM files of an xDS channel over TLS.
type BootstrapTLS struct {
	CAFile   string `json:"ca_certificate_file"`
	CertFile string `json:"certificate_file,omitempty"`
	KeyFile  string `json:"private_key_file,omitempty"`
}

type bootstrapJSON struct {
	XDSServers []xdsServerJSON `json:"xds_servers"`
	Node       nodeJSON        `json:"node"`
}

type xdsServerJSON struct {
	ServerURI      string        `json:"server_uri"`
	ChannelCreds   []channelCred `json:"channel_creds"`
	ServerFeatures []string      `json:"server_features"`
}

type channelCred struct {
	Type   string        `json:"type"`
	Config *BootstrapTLS `json:"config,omitempty"`
}

type nodeJSON struct {
	ID string `json:"id"`
}

// Bootstrap returns the bootstrap file of cfg, as JSON.
func Bootstrap(cfg BootstrapConfig) ([]byte, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("xds bootstrap: no server address")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("xds bootstrap: empty node id")
	}
	cred := channelCred{Type: "insecure"}
	if cfg.TLS != nil {
		if cfg.TLS.CAFile == "" || (cfg.TLS.CertFile == "") != (cfg.TLS.KeyFile == "") {
			return nil, errors.New("xds bootstrap: TLS needs a CA file, and a certificate and key together or neither")
		}
		cred = channelCred{Type: "tls", Config: cfg.TLS}
	}
	b := bootstrapJSON{Node: nodeJSON{ID: cfg.NodeID}}
	for _, addr := range cfg.Servers {
		if err := discovery.CheckAddr(addr, discovery.DialAddr); err != nil {
			return nil, fmt.Errorf("xds bootstrap: server %w", err)
		}
		b.XDSServers = append(b.XDSServers, xdsServerJSON{
			ServerURI:      addr,
			ChannelCreds:   []channelCred{cred},
			ServerFeatures: []string{"xds_v3"},
		})
	}
	return json.MarshalIndent(b, "", "  ")
}
