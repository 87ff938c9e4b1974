// Command tls writes what deploy/docker-compose.tls.yml mounts: a CA, the
// certificates and keys of the etcd members, the nodes and the client, and
// random passwords for the etcd users. It needs nothing but Go:
//
//	go run ./deploy/tls                 # into deploy/tls/out
//	go run ./deploy/tls -out DIR -force # elsewhere, or again
//
// A demonstration PKI: see docs/DEPLOY.md, "The Docker cluster, secured".
package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/routeguide-cluster/routeguide/internal/certgen"
)

func main() {
	out := flag.String("out", filepath.Join("deploy", "tls", "out"), "`directory` to write the files into")
	force := flag.Bool("force", false, "overwrite files that exist")
	flag.Parse()
	if err := write(*out, *force); err != nil {
		fmt.Fprintf(os.Stderr, "tls: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote the CA, certificates, keys and etcd passwords into %s\n", *out)
}

// users are the etcd users the compose variant makes, each with its
// password in the file etcd-<user>-password.
var users = []string{"root", "node", "client"}

// service is the service name the nodes register under. gRPC checks the
// nodes' certificate against the authority of the target etcd:///routeguide,
// which is this name, whatever IP it dials: so the nodes' certificate
// carries it, and clients need no --tls-server-name.
const service = "routeguide"

// files makes the contents of every file, by name.
func files() (map[string][]byte, error) {
	ca, err := certgen.NewCA("routeguide compose CA", 0)
	if err != nil {
		return nil, err
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	leaves := map[string]certgen.Leaf{
		// The members' certificate serves clients and peers, and is their
		// client certificate towards each other; etcdctl in a member's
		// container dials 127.0.0.1.
		"etcd": {CommonName: "etcd", DNSNames: []string{"etcd1", "etcd2", "etcd3", "localhost"}, IPs: loopback, Server: true, Client: true},
		// The nodes serve with it (the health probe dials 127.0.0.1) and
		// show it to etcd, which requires a client certificate.
		"node": {CommonName: "node", DNSNames: []string{service, "node", "localhost"}, IPs: loopback, Server: true, Client: true},
		// The client, and the health probe, towards nodes and etcd.
		"client": {CommonName: "client", Client: true},
	}
	contents := map[string][]byte{"ca.pem": ca.CertPEM}
	for name, leaf := range leaves {
		pair, err := ca.Issue(leaf)
		if err != nil {
			return nil, err
		}
		contents[name+".pem"] = pair.CertPEM
		contents[name+"-key.pem"] = pair.KeyPEM
	}
	for _, user := range users {
		contents["etcd-"+user+"-password"] = []byte(rand.Text() + "\n")
	}
	return contents, nil
}

// write writes every file into dir, unless one exists and force is off: new
// certificates beside old ones would not chain to the CA the others trust.
func write(dir string, force bool) error {
	contents, err := files()
	if err != nil {
		return err
	}
	if !force {
		for name := range contents {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return fmt.Errorf("%s exists; -force writes a new set over it", filepath.Join(dir, name))
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range contents {
		// Readable by all: see the package comment.
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
