// Package localetcd runs a single-member etcd server inside the process, on
// 127.0.0.1, for `node -dev` and for tests. It is the real etcd server
// (go.etcd.io/etcd/server/v3/embed), not a stand-in.
package localetcd

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config describes the server to start.
type Config struct {
	// Dir holds the data. Starting again on the same Dir keeps the data;
	// empty means a temporary directory, removed at Close.
	Dir string
	// ClientAddr is the host:port clients reach it at; 127.0.0.1:0 picks a
	// free port below the ephemeral range (so that a restart can bind it
	// again; see port.go), which Server.ClientURL then reports.
	ClientAddr string
	// PeerAddr is the host:port of the (unused) peer listener; 127.0.0.1:0
	// picks a free port.
	PeerAddr string
	// LogLevel is etcd's own log level; empty means "error", as etcd is
	// chatty at info.
	LogLevel string
	// StartTimeout bounds the wait for the server to be ready; zero means 30s.
	StartTimeout time.Duration
	// ClientTLS, when its CertFile is set, serves clients over TLS (https
	// URLs) instead of plain HTTP, as a production etcd does.
	ClientTLS ClientTLS
	// QuotaBytes is etcd's --quota-backend-bytes: past it, etcd raises the
	// NOSPACE alarm and refuses writes. Zero means etcd's default, 2 GiB.
	QuotaBytes int64
	// History is how long etcd keeps old revisions before its periodic
	// auto-compaction drops them, so that what deleted and expired keys
	// held is freed; zero means an hour, as deploy/etcd/cluster.env keeps.
	History time.Duration
	// BcryptCost is the cost of the hashes of users' passwords; zero means
	// etcd's default, 10. Every authentication checks one, which under the
	// race detector takes seconds at 10: tests use bcrypt.MinCost.
	BcryptCost uint
}

// ClientTLS is the TLS of the client listener: the server's certificate
// and key and, to require client certificates, the CA they must chain to.
type ClientTLS struct {
	CertFile, KeyFile string
	// CAFile, when set, makes every client present a certificate signed by
	// it (etcd's --client-cert-auth); etcd then also takes the certificate's
	// common name as the user name of a client that sends no password.
	CAFile string
}

// Server is a running etcd member.
type Server struct {
	etcd      *embed.Etcd
	scheme    string // of the client URL: http, or https with ClientTLS
	tempDir   string // removed at Close, when Config.Dir was empty
	closeOnce sync.Once
}

// Start starts the server and returns once it serves clients.
func Start(cfg Config) (*Server, error) {
	if cfg.Dir != "" {
		return startIn(cfg)
	}
	dir, err := os.MkdirTemp("", "localetcd-")
	if err != nil {
		return nil, fmt.Errorf("start etcd: data directory: %w", err)
	}
	cfg.Dir = dir
	s, err := startIn(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.tempDir = dir
	return s, nil
}

// startIn starts the server with its data in cfg.Dir.
func startIn(cfg Config) (*Server, error) {
	scheme := "http"
	if cfg.ClientTLS.CertFile != "" {
		scheme = "https"
	}
	clientURL, err := url.Parse(scheme + "://" + orDefault(cfg.ClientAddr, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("start etcd: client address: %w", err)
	}
	if clientURL.Port() != "0" {
		return start(cfg, scheme, clientURL)
	}
	// A port for the caller to start on again after a stop: see port.go.
	for attempt := 1; ; attempt++ {
		port, err := freePortBelowEphemeral(clientURL.Hostname())
		if err != nil {
			return nil, fmt.Errorf("start etcd: %w", err)
		}
		picked := *clientURL
		picked.Host = net.JoinHostPort(clientURL.Hostname(), port)
		s, err := start(cfg, scheme, &picked)
		if err == nil || !addressInUse(err) || attempt == 3 {
			return s, err
		}
	}
}

// start starts the server with its client listener on clientURL.
func start(cfg Config, scheme string, clientURL *url.URL) (*Server, error) {
	peerURL, err := url.Parse("http://" + orDefault(cfg.PeerAddr, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("start etcd: peer address: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = "local"
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.ClientTLSInfo = transport.TLSInfo{
		CertFile:       cfg.ClientTLS.CertFile,
		KeyFile:        cfg.ClientTLS.KeyFile,
		TrustedCAFile:  cfg.ClientTLS.CAFile,
		ClientCertAuth: cfg.ClientTLS.CAFile != "",
	}
	ec.QuotaBackendBytes = cfg.QuotaBytes
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = time.Hour.String()
	if cfg.History > 0 {
		ec.AutoCompactionRetention = cfg.History.String()
	}
	ec.BcryptCost = cfg.BcryptCost
	SetLogging(ec, cfg.LogLevel)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	timeout := StartTimeout(cfg.StartTimeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	if err := WaitReady(e, timer.C, timeout); err != nil {
		e.Close()
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	return &Server{etcd: e, scheme: scheme}, nil
}

// SetLogging, StartTimeout and WaitReady are shared with the multi-member
// cluster of the fault tests (internal/testutils/etcdtest).

// SetLogging makes etcd log at level through its own logger, or at "error"
// to nowhere when level is empty: etcd is chatty at info.
func SetLogging(ec *embed.Config, level string) {
	ec.LogLevel = orDefault(level, "error")
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if level != "" {
		ec.ZapLoggerBuilder = nil
	}
}

// StartTimeout is d, or 30s when d is zero or less.
func StartTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return 30 * time.Second
	}
	return d
}

// WaitReady waits until e serves clients, fails, or deadline fires, timeout
// after the start.
func WaitReady(e *embed.Etcd, deadline <-chan time.Time, timeout time.Duration) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return err
	case <-deadline:
		return fmt.Errorf("not ready after %v", timeout)
	}
}

// ClientURL is the URL clients reach the server at, with the actual port.
func (s *Server) ClientURL() string {
	return s.scheme + "://" + s.etcd.Clients[0].Addr().String()
}

// ClientAddr is the host:port of ClientURL.
func (s *Server) ClientAddr() string {
	return s.etcd.Clients[0].Addr().String()
}

// Close stops the server and waits until it has stopped. Closing again does
// nothing, so a test can stop the server early and still clean up with Close.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.etcd.Close()
		if s.tempDir != "" {
			os.RemoveAll(s.tempDir)
		}
	})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
