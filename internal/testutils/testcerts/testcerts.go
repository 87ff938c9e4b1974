// Package testcerts gives a test a fresh certificate authority, a server
// certificate for 127.0.0.1, ::1 and localhost, and a client certificate,
// written as PEM files into the test's temporary directory. Every call makes
// new keys, so two calls make two CAs that do not trust each other.
package testcerts

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/certgen"
)

// ClientName is the common name of the client certificate; etcd takes it as
// the user name of a client that authenticates by certificate.
const ClientName = "routeguide-client"

// Files are the paths of one CA's files.
type Files struct {
	Dir string
	// CA is the CA certificate, which both sides trust.
	CA string
	// ServerCert and ServerKey are valid for 127.0.0.1, ::1 and localhost,
	// for servers and clients both, as an etcd member's certificate is.
	ServerCert, ServerKey string
	// ClientCert and ClientKey are a client certificate named ClientName.
	ClientCert, ClientKey string

	ca *certgen.CA
}

// New makes a CA with a server and a client certificate, and writes them
// into a new temporary directory of tb.
func New(tb testing.TB) Files {
	tb.Helper()
	ca, err := certgen.NewCA("routeguide test CA", 0)
	if err != nil {
		tb.Fatal(err)
	}
	f := Files{Dir: tb.TempDir(), ca: ca}
	f.CA = f.Write(tb, "ca.pem", ca.CertPEM)
	f.ServerCert, f.ServerKey = f.Issue(tb, "server", certgen.Leaf{
		CommonName: "localhost",
		DNSNames:   []string{"localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Server:     true,
		Client:     true,
	})
	f.ClientCert, f.ClientKey = f.Issue(tb, "client", certgen.Leaf{CommonName: ClientName, Client: true})
	return f
}

// Issue makes another certificate signed by the same CA and writes it as
// NAME.pem and NAME-key.pem; it returns their paths.
func (f Files) Issue(tb testing.TB, name string, leaf certgen.Leaf) (certFile, keyFile string) {
	tb.Helper()
	pair, err := f.ca.Issue(leaf)
	if err != nil {
		tb.Fatal(err)
	}
	return f.Write(tb, name+".pem", pair.CertPEM), f.Write(tb, name+"-key.pem", pair.KeyPEM)
}

// Write writes data to a file called name in the directory and returns its
// path; tests of bad files write theirs with it.
func (f Files) Write(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	path := filepath.Join(f.Dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Read returns the contents of the file at path.
func Read(tb testing.TB, path string) []byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// Replace puts data at path by renaming a new file over it, as a careful
// operator or a certificate manager does: a reader sees the old file or the
// new one, never half of either.
func Replace(tb testing.TB, path string, data []byte) {
	tb.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// Secret is a directory laid out as Kubernetes mounts a secret: each file is
// a symlink into ..data, a symlink to the directory of the current version.
// Update writes a new version and swaps ..data to it in one rename, which
// watchers of file events on the files themselves never hear of.
type Secret struct {
	Dir     string
	version int
}

// NewSecret makes a secret of files (name to contents) in a new temporary
// directory of tb.
func NewSecret(tb testing.TB, files map[string][]byte) *Secret {
	tb.Helper()
	s := &Secret{Dir: tb.TempDir()}
	s.Update(tb, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(s.Dir, name)); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// Path is where the file called name is read.
func (s *Secret) Path(name string) string { return filepath.Join(s.Dir, name) }

// Update makes files the secret's new version, at once.
func (s *Secret) Update(tb testing.TB, files map[string][]byte) {
	tb.Helper()
	s.version++
	version := fmt.Sprintf("..v%d", s.version)
	if err := os.Mkdir(filepath.Join(s.Dir, version), 0o700); err != nil {
		tb.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, version, name), data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	link := filepath.Join(s.Dir, "..data_tmp")
	if err := os.Symlink(version, link); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(link, filepath.Join(s.Dir, "..data")); err != nil {
		tb.Fatal(err)
	}
}

// Parse returns the first certificate in data, PEM.
func Parse(tb testing.TB, data []byte) *x509.Certificate {
	tb.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		tb.Fatal("no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}
