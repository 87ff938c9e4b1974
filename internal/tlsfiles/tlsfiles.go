// Package tlsfiles turns the PEM files that TLS flags name into a
// *tls.Config for a server or a client. Its errors name the flag and the file
// at fault, so that a node or client with a bad file exits with one line
// that says what to fix. Every configuration asks for TLS 1.2 at least.
//
// Config reads the files once. Open reads them again while a process runs,
// so that a renewed certificate or CA is taken without a restart (reload.go).
package tlsfiles

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"
)

// The prefixes of the two families of TLS flags. The flags of a
// configuration are its prefix with -cert, -key, -ca, -client-ca or
// -server-name, and its errors name them so.
const (
	// GRPCFlags prefixes the gRPC TLS flags of the node (--tls-cert,
	// --tls-key, --tls-client-ca) and of the client (--tls-ca, --tls-cert,
	// --tls-key, --tls-server-name).
	GRPCFlags = "tls"
	// EtcdFlags prefixes the TLS flags for etcd: --etcd-ca, --etcd-cert
	// and --etcd-key.
	EtcdFlags = "etcd"
)

// MinVersion is the oldest TLS version a server accepts or a client offers.
const MinVersion = tls.VersionTLS12

// Server names the files of a server's TLS: its certificate and key, and,
// for mutual TLS, the CA that every client's certificate must chain to.
//
// The flag names in errors are a prefix with -cert, -key and -client-ca:
// prefix "tls" names --tls-cert, --tls-key and --tls-client-ca.
type Server struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, turns on mutual TLS: a client without a
	// certificate signed by this CA is refused during the handshake.
	ClientCAFile string
}

// Enabled reports whether any file is set, that is whether the server is to
// serve TLS at all.
func (s Server) Enabled() bool {
	return s.CertFile != "" || s.KeyFile != "" || s.ClientCAFile != ""
}

// Validate checks that the files that go together are set together,
// without reading them.
func (s Server) Validate(prefix string) error {
	f := flags(prefix)
	if err := checkPair(s.CertFile, s.KeyFile, f); err != nil {
		return err
	}
	if s.ClientCAFile != "" && s.CertFile == "" {
		return fmt.Errorf("%s: mutual TLS needs the server's own certificate too: set %s and %s", f.clientCA, f.cert, f.key)
	}
	return nil
}

// Config reads the files into a server configuration; it is nil, with no
// error, when no file is set.
func (s Server) Config(prefix string) (*tls.Config, error) {
	if !s.Enabled() {
		return nil, nil
	}
	if err := s.Validate(prefix); err != nil {
		return nil, err
	}
	f := flags(prefix)
	pair, err := loadPair(s.CertFile, s.KeyFile, f)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: MinVersion, Certificates: []tls.Certificate{pair}}
	if s.ClientCAFile != "" {
		if cfg.ClientCAs, err = loadPool(s.ClientCAFile, f.clientCA); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Client names the files of a client's TLS: the CA that the server's
// certificate must chain to, and, for mutual TLS, the client's own
// certificate and key.
//
// The flag names in errors are a prefix with -ca, -cert, -key and
// -server-name: prefix "etcd" names --etcd-ca, --etcd-cert and --etcd-key.
type Client struct {
	// CAFile is the CA to trust; empty means the system's roots.
	CAFile            string
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry; empty
	// means what gRPC checks by default, the authority of the target (for
	// etcd:///routeguide, "routeguide", whatever IP the resolver gave).
	// Set it when the certificate carries another name: one certificate
	// for "node.routeguide" then serves any node.
	ServerName string
}

// Enabled reports whether anything is set, that is whether the client is to
// speak TLS at all.
func (c Client) Enabled() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != ""
}

// Validate checks that the files that go together are set together,
// without reading them.
func (c Client) Validate(prefix string) error {
	return checkPair(c.CertFile, c.KeyFile, flags(prefix))
}

// Config reads the files into a client configuration; it is nil, with no
// error, when nothing is set.
func (c Client) Config(prefix string) (*tls.Config, error) {
	if !c.Enabled() {
		return nil, nil
	}
	if err := c.Validate(prefix); err != nil {
		return nil, err
	}
	f := flags(prefix)
	cfg := &tls.Config{MinVersion: MinVersion, ServerName: c.ServerName}
	if c.CAFile != "" {
		var err error
		if cfg.RootCAs, err = loadPool(c.CAFile, f.ca); err != nil {
			return nil, err
		}
	}
	if c.CertFile != "" {
		pair, err := loadPair(c.CertFile, c.KeyFile, f)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// flagNames are the flags of one TLS configuration, as errors name them.
type flagNames struct{ ca, cert, key, clientCA string }

func flags(prefix string) flagNames {
	p := "--" + prefix + "-"
	return flagNames{ca: p + "ca", cert: p + "cert", key: p + "key", clientCA: p + "client-ca"}
}

func checkPair(certFile, keyFile string, f flagNames) error {
	switch {
	case certFile != "" && keyFile == "":
		return fmt.Errorf("%s: set without %s; give both or neither", f.cert, f.key)
	case certFile == "" && keyFile != "":
		return fmt.Errorf("%s: set without %s; give both or neither", f.key, f.cert)
	}
	return nil
}

// loadPair reads a certificate and its key (see parsePair).
func loadPair(certFile, keyFile string, f flagNames) (tls.Certificate, error) {
	certPEM, err := readFile(certFile, f.cert)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readFile(keyFile, f.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return parsePair(certPEM, keyPEM, certFile, keyFile, f)
}

// parsePair checks that a certificate and its key are whole PEM, go
// together, and that the certificate is valid now: an expired certificate
// would fail every handshake, so it is better refused when it is read.
func parsePair(certPEM, keyPEM []byte, certFile, keyFile string, f flagNames) (tls.Certificate, error) {
	certs, err := pemBlocks(certPEM, certFile, f.cert)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !hasBlock(certs, func(t string) bool { return t == "CERTIFICATE" }) {
		return tls.Certificate{}, fmt.Errorf("%s: %s holds no PEM certificate", f.cert, certFile)
	}
	keys, err := pemBlocks(keyPEM, keyFile, f.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !hasBlock(keys, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }) {
		return tls.Certificate{}, fmt.Errorf("%s: %s holds no PEM private key", f.key, keyFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return tls.Certificate{}, fmt.Errorf("%s: %s is not the key of the certificate in %s (%s): %w", f.key, keyFile, certFile, f.cert, err)
		}
		return tls.Certificate{}, fmt.Errorf("%s, %s: %s and %s: %w", f.cert, f.key, certFile, keyFile, err)
	}
	now := time.Now()
	switch leaf := pair.Leaf; {
	case now.After(leaf.NotAfter):
		return tls.Certificate{}, fmt.Errorf("%s: the certificate in %s expired at %s", f.cert, certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return tls.Certificate{}, fmt.Errorf("%s: the certificate in %s is not valid before %s", f.cert, certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return pair, nil
}

// loadPool reads the CA certificates in file.
func loadPool(file, flag string) (*x509.CertPool, error) {
	data, err := readFile(file, flag)
	if err != nil {
		return nil, err
	}
	pool, _, err := parsePool(data, file, flag)
	return pool, err
}

// parsePool makes a pool of the CA certificates in data, and says when the
// first of them expires. Every certificate must parse: a bundle cut short
// while it was written would otherwise quietly trust fewer CAs.
func parsePool(data []byte, file, flag string) (*x509.CertPool, time.Time, error) {
	blocks, err := pemBlocks(data, file, flag)
	if err != nil {
		return nil, time.Time{}, err
	}
	pool := x509.NewCertPool()
	var first time.Time
	for _, block := range blocks {
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("%s: %s: %w", flag, file, err)
		}
		pool.AddCert(cert)
		if first.IsZero() || cert.NotAfter.Before(first) {
			first = cert.NotAfter
		}
	}
	if first.IsZero() {
		return nil, time.Time{}, fmt.Errorf("%s: %s holds no PEM certificate", flag, file)
	}
	return pool, first, nil
}

// readFile reads file; os's error already names it ("open /x: no such file
// or directory"), and the flag is added in front.
func readFile(file, flag string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return data, nil
}

// pemBlocks decodes every PEM block of data. What follows the last whole
// block may be text, but not the start of another: that is a file cut short,
// such as one read while it was being written.
func pemBlocks(data []byte, file, flag string) ([]*pem.Block, error) {
	var blocks []*pem.Block
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			if bytes.Contains(data, []byte("-----BEGIN")) {
				return nil, fmt.Errorf("%s: %s ends in a PEM block cut short", flag, file)
			}
			return blocks, nil
		}
		blocks, data = append(blocks, block), rest
	}
}

// hasBlock reports whether one of blocks has a type that is wanted.
func hasBlock(blocks []*pem.Block, wanted func(blockType string) bool) bool {
	for _, block := range blocks {
		if wanted(block.Type) {
			return true
		}
	}
	return false
}
