package tlsfiles

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/certgen"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
)

func TestNothingSetMeansNoTLS(t *testing.T) {
	if cfg, err := (Server{}).Config("tls"); cfg != nil || err != nil {
		t.Errorf("Server{}.Config = %v, %v; want nil, nil", cfg, err)
	}
	if cfg, err := (Client{}).Config("tls"); cfg != nil || err != nil {
		t.Errorf("Client{}.Config = %v, %v; want nil, nil", cfg, err)
	}
}

// TestBadFilesFailNamingFlagAndFile guards the one line a node or client
// exits with: it must say which flag and which file to fix.
func TestBadFilesFailNamingFlagAndFile(t *testing.T) {
	certs := testcerts.New(t)
	other := testcerts.New(t)
	missing := filepath.Join(certs.Dir, "missing.pem")
	junk := certs.Write(t, "junk.pem", []byte("not PEM at all\n"))
	expiredCert, expiredKey := certs.Issue(t, "expired", certgen.Leaf{CommonName: "old", Server: true, NotAfter: time.Now().Add(-time.Hour)})
	futureCert, futureKey := certs.Issue(t, "future", certgen.Leaf{CommonName: "new", Server: true, NotBefore: time.Now().Add(time.Hour)})

	tests := []struct {
		name   string
		config func() (*tls.Config, error)
		want   []string
	}{
		{"cert without key", Server{CertFile: certs.ServerCert}.configFunc("tls"), []string{"--tls-cert: set without --tls-key"}},
		{"key without cert", Server{KeyFile: certs.ServerKey}.configFunc("tls"), []string{"--tls-key: set without --tls-cert"}},
		{"client CA without cert", Server{ClientCAFile: certs.CA}.configFunc("tls"), []string{"--tls-client-ca:", "--tls-cert"}},
		{"missing cert", Server{CertFile: missing, KeyFile: certs.ServerKey}.configFunc("tls"), []string{"--tls-cert: open " + missing + ": no such file"}},
		{"missing key", Server{CertFile: certs.ServerCert, KeyFile: missing}.configFunc("tls"), []string{"--tls-key: open " + missing + ": no such file"}},
		{"cert not PEM", Server{CertFile: junk, KeyFile: certs.ServerKey}.configFunc("tls"), []string{"--tls-cert: " + junk + " holds no PEM certificate"}},
		{"key not PEM", Server{CertFile: certs.ServerCert, KeyFile: junk}.configFunc("tls"), []string{"--tls-key: " + junk + " holds no PEM private key"}},
		{"key given as cert", Server{CertFile: certs.ServerKey, KeyFile: certs.ServerKey}.configFunc("tls"), []string{"--tls-cert: " + certs.ServerKey + " holds no PEM certificate"}},
		{"key of another certificate", Server{CertFile: certs.ServerCert, KeyFile: other.ServerKey}.configFunc("tls"),
			[]string{"--tls-key: " + other.ServerKey + " is not the key of the certificate in " + certs.ServerCert}},
		{"expired cert", Server{CertFile: expiredCert, KeyFile: expiredKey}.configFunc("tls"), []string{"--tls-cert: the certificate in " + expiredCert + " expired at"}},
		{"cert not yet valid", Server{CertFile: futureCert, KeyFile: futureKey}.configFunc("tls"), []string{"--tls-cert: the certificate in " + futureCert + " is not valid before"}},
		{"missing client CA", Server{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, ClientCAFile: missing}.configFunc("tls"), []string{"--tls-client-ca: open " + missing}},
		{"client CA not PEM", Server{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, ClientCAFile: junk}.configFunc("tls"), []string{"--tls-client-ca: " + junk + " holds no PEM certificate"}},
		{"client: missing CA", Client{CAFile: missing}.configFunc("tls"), []string{"--tls-ca: open " + missing}},
		{"client: CA not PEM", Client{CAFile: junk}.configFunc("etcd"), []string{"--etcd-ca: " + junk + " holds no PEM certificate"}},
		{"client: cert without key", Client{CAFile: certs.CA, CertFile: certs.ClientCert}.configFunc("etcd"), []string{"--etcd-cert: set without --etcd-key"}},
		{"client: key of another certificate", Client{CertFile: certs.ClientCert, KeyFile: certs.ServerKey}.configFunc("tls"), []string{"--tls-key: " + certs.ServerKey + " is not the key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.config()
			if err == nil {
				t.Fatalf("no error; got a configuration %v", cfg)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

func TestMissingFileErrorIsNotExist(t *testing.T) {
	_, err := Client{CAFile: filepath.Join(t.TempDir(), "none.pem")}.Config("tls")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v does not wrap os.ErrNotExist", err)
	}
}

// TestHandshakes runs real TLS handshakes over loopback between the
// configurations the files make.
func TestHandshakes(t *testing.T) {
	certs := testcerts.New(t)
	stranger := testcerts.New(t) // a CA nobody here trusts
	mutual := Server{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, ClientCAFile: certs.CA}
	serverOnly := Server{CertFile: certs.ServerCert, KeyFile: certs.ServerKey}

	tests := []struct {
		name   string
		server Server
		client Client
		addr   string // what the client dials: "127.0.0.1" or "localhost"
		maxTLS uint16 // the client's highest version; zero means the default
		ok     bool
	}{
		{"mutual TLS", mutual, Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}, "127.0.0.1", 0, true},
		{"mutual TLS by name", mutual, Client{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}, "localhost", 0, true},
		{"server TLS, client without certificate", serverOnly, Client{CAFile: certs.CA}, "127.0.0.1", 0, true},
		{"mutual TLS refuses a client without certificate", mutual, Client{CAFile: certs.CA}, "127.0.0.1", 0, false},
		{"mutual TLS refuses a certificate of another CA", mutual, Client{CAFile: certs.CA, CertFile: stranger.ClientCert, KeyFile: stranger.ClientKey}, "127.0.0.1", 0, false},
		{"client refuses a server it does not trust", serverOnly, Client{CAFile: stranger.CA}, "127.0.0.1", 0, false},
		{"client refuses a server name the certificate lacks", serverOnly, Client{CAFile: certs.CA, ServerName: "node.routeguide"}, "127.0.0.1", 0, false},
		{"server refuses TLS 1.1", serverOnly, Client{CAFile: certs.CA}, "127.0.0.1", tls.VersionTLS11, false},
	}
	// The configurations of files read once, and of files that Open reads
	// again (the client's as etcd's client takes it, checking a server
	// dialled by IP against the endpoints' addresses).
	readOnce := func(s Server, c Client) (*tls.Config, *tls.Config, error) {
		serverCfg, err := s.Config("tls")
		if err != nil {
			return nil, nil, err
		}
		clientCfg, err := c.Config("tls")
		return serverCfg, clientCfg, err
	}
	reloading := func(s Server, c Client) (*tls.Config, *tls.Config, error) {
		st, err := s.Open("tls", Reload{})
		if err != nil {
			return nil, nil, err
		}
		ct, err := c.Open("tls", Reload{})
		if err != nil {
			return nil, nil, err
		}
		return st.Config(), ct.Config([]string{"https://127.0.0.1:2379"}), nil
	}
	for _, tt := range tests {
		for name, configs := range map[string]func(Server, Client) (*tls.Config, *tls.Config, error){"read once": readOnce, "reloading": reloading} {
			t.Run(tt.name+", "+name, func(t *testing.T) {
				serverCfg, clientCfg, err := configs(tt.server, tt.client)
				if err != nil {
					t.Fatal(err)
				}
				if tt.maxTLS != 0 {
					clientCfg.MinVersion, clientCfg.MaxVersion = tls.VersionTLS10, tt.maxTLS
				}
				err = handshake(t, serverCfg, clientCfg, tt.addr)
				if tt.ok && err != nil {
					t.Errorf("handshake failed: %v", err)
				}
				if !tt.ok && err == nil {
					t.Error("handshake succeeded; want it refused")
				}
			})
		}
	}
}

// handshake serves one connection with serverCfg and dials it with
// clientCfg; it returns the first error either side saw, after both are
// done. In TLS 1.3 the client finishes before the server has checked the
// client's certificate, so the client reads until the server has answered.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config, host string) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		if err := conn.(*tls.Conn).Handshake(); err != nil {
			served <- err
			return
		}
		_, err = conn.Write([]byte("x"))
		served <- err
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	conn, err := tls.Dial("tcp", net.JoinHostPort(host, port), clientCfg)
	if err == nil {
		_, err = io.ReadFull(conn, make([]byte, 1))
		conn.Close()
	} else {
		l.Close() // the server may still wait in Accept
	}
	if serverErr := <-served; err == nil {
		err = serverErr
	}
	return err
}

func (s Server) configFunc(prefix string) func() (*tls.Config, error) {
	return func() (*tls.Config, error) { return s.Config(prefix) }
}

func (c Client) configFunc(prefix string) func() (*tls.Config, error) {
	return func() (*tls.Config, error) { return c.Config(prefix) }
}
