package tlsfiles

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
)

// DefaultReloadInterval is how often, at most, Open's files are read again.
const DefaultReloadInterval = time.Second

// Bounds of a reload interval: reading the files more often costs for
// nothing, and less often leaves a rotation waiting for a day.
const (
	MinReloadInterval = 10 * time.Millisecond
	MaxReloadInterval = 24 * time.Hour
)

// ReloadFlag is the flag of the reload interval, of nodes and clients alike.
const ReloadFlag = GRPCFlags + "-reload-interval"

// RegisterReloadInterval adds ReloadFlag, which sets d, to fs.
func RegisterReloadInterval(fs *flag.FlagSet, d *time.Duration) {
	fs.DurationVar(d, ReloadFlag, *d, "how often, at most, the files of --tls-* and --etcd-ca, --etcd-cert and --etcd-key are read again, to take renewed ones without a restart")
}

// CheckReloadInterval checks d, the value of ReloadFlag.
func CheckReloadInterval(d time.Duration) error {
	if d < MinReloadInterval || d > MaxReloadInterval {
		return fmt.Errorf("--%s: %v is not between %v and %v", ReloadFlag, d, MinReloadInterval, MaxReloadInterval)
	}
	return nil
}

// Reload is how the files that Open reads are read again while a process
// runs: at most once per Interval, when a handshake or a scrape needs them,
// compared by content, and refused, with one log line and a count, when they
// do not load. docs/DESIGN.md, "TLS files read again", says why so.
type Reload struct {
	// Interval is how often, at most, the files are read again; zero
	// means DefaultReloadInterval.
	Interval time.Duration
	// Logger hears of files reloaded and refused; nil means slog.Default().
	Logger *slog.Logger
	// Metrics, when set, exports the expiry of what is loaded and counts
	// refused files.
	Metrics *Metrics
}

// The roles of the files a process loads, as the metrics label them.
const (
	RoleServer     = "server"      // a node's serving certificate
	RoleClientCA   = "client_ca"   // the CA a node checks clients against
	RoleClient     = "client"      // a client's certificate for mutual TLS
	RoleServerCA   = "server_ca"   // the CA a client checks nodes against
	RoleEtcdClient = "etcd_client" // the certificate shown to etcd
	RoleEtcdCA     = "etcd_ca"     // the CA etcd's certificate must chain to
)

// ServerTLS is a server's certificate and key, and for mutual TLS the CA of
// its clients, read again when their files change.
type ServerTLS struct {
	pair     *watched[tls.Certificate]
	clientCA *watched[*x509.CertPool] // nil without mutual TLS
}

// Open reads the files and watches them; it returns nil, with no error,
// when no file is set. Errors name the flag and the file at fault.
func (s Server) Open(prefix string, r Reload) (*ServerTLS, error) {
	if !s.Enabled() {
		return nil, nil
	}
	if err := s.Validate(prefix); err != nil {
		return nil, err
	}
	f := flags(prefix)
	st := &ServerTLS{}
	var err error
	if st.pair, err = watchPair(RoleServer, s.CertFile, s.KeyFile, f, r); err != nil {
		return nil, err
	}
	if s.ClientCAFile != "" {
		if st.clientCA, err = watchPool(RoleClientCA, s.ClientCAFile, f.clientCA, r); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Mutual reports whether clients must show a certificate.
func (s *ServerTLS) Mutual() bool { return s.clientCA != nil }

// Config is a server configuration that takes the files as they are at
// each handshake. A client's certificate is checked in VerifyConnection,
// because crypto/tls reads ClientCAs once; VerifyConnection runs on resumed
// sessions too, so a CA dropped from the file is dropped for them as well.
func (s *ServerTLS) Config() *tls.Config {
	cfg := &tls.Config{
		MinVersion: MinVersion,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.pair.get(), nil
		},
	}
	if s.clientCA != nil {
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, x509.VerifyOptions{
				Roots:     *s.clientCA.get(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
		}
	}
	return cfg
}

// ClientTLS is a client's CA, and its certificate for mutual TLS, read
// again when their files change.
type ClientTLS struct {
	pair       *watched[tls.Certificate] // nil: no client certificate
	ca         *watched[*x509.CertPool]  // nil: the system's roots
	serverName string
}

// Open reads the files and watches them; it returns nil, with no error,
// when nothing is set. Errors name the flag and the file at fault.
func (c Client) Open(prefix string, r Reload) (*ClientTLS, error) {
	if !c.Enabled() {
		return nil, nil
	}
	if err := c.Validate(prefix); err != nil {
		return nil, err
	}
	f := flags(prefix)
	pairRole, caRole := RoleClient, RoleServerCA
	if prefix == EtcdFlags {
		pairRole, caRole = RoleEtcdClient, RoleEtcdCA
	}
	ct := &ClientTLS{serverName: c.ServerName}
	var err error
	if c.CAFile != "" {
		if ct.ca, err = watchPool(caRole, c.CAFile, f.ca, r); err != nil {
			return nil, err
		}
	}
	if c.CertFile != "" {
		if ct.pair, err = watchPair(pairRole, c.CertFile, c.KeyFile, f, r); err != nil {
			return nil, err
		}
	}
	return ct, nil
}

// configNow is a configuration of the files as they are now, checked by
// crypto/tls itself.
func (c *ClientTLS) configNow() *tls.Config {
	cfg := &tls.Config{MinVersion: MinVersion, ServerName: c.serverName}
	if c.ca != nil {
		cfg.RootCAs = *c.ca.get()
	}
	if c.pair != nil {
		cfg.Certificates = []tls.Certificate{*c.pair.get()}
	}
	return cfg
}

// Credentials are gRPC transport credentials that make each new connection
// with the files as they are then.
func (c *ClientTLS) Credentials() credentials.TransportCredentials {
	return &reloadingCreds{TransportCredentials: credentials.NewTLS(c.configNow()), files: c}
}

// reloadingCreds make every handshake with a configuration of the files of
// the moment; the embedded credentials answer the rest (Info, Clone).
type reloadingCreds struct {
	credentials.TransportCredentials
	files *ClientTLS
}

func (r *reloadingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(r.files.configNow()).ClientHandshake(ctx, authority, conn)
}

func (r *reloadingCreds) Clone() credentials.TransportCredentials {
	return &reloadingCreds{TransportCredentials: r.TransportCredentials.Clone(), files: r.files}
}

// Config is a client configuration for etcd's client, which takes a
// *tls.Config, to dial endpoints (URLs or host:port). The server is checked
// in VerifyConnection against the CA of the moment, by the name in the SNI,
// or, dialled by IP (no SNI), by the endpoints' IPs (docs/DESIGN.md).
func (c *ClientTLS) Config(endpoints []string) *tls.Config {
	cfg := &tls.Config{MinVersion: MinVersion, ServerName: c.serverName}
	if c.pair != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.pair.get(), nil
		}
	}
	if c.ca != nil {
		ips := endpointIPs(endpoints)
		cfg.InsecureSkipVerify = true // verified by VerifyConnection, below
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyServer(cs, *c.ca.get(), ips)
		}
	}
	return cfg
}

// verifyServer checks the server's chain against roots and its name against
// the SNI, or, for a server dialled by IP (no SNI), against ips.
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, ips []string) error {
	if err := verifyChain(cs.PeerCertificates, x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName}); err != nil {
		return err
	}
	if cs.ServerName != "" {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	for _, ip := range ips {
		if leaf.VerifyHostname(ip) == nil {
			return nil
		}
	}
	return fmt.Errorf("tls: the server's certificate is valid for none of the endpoints' addresses %v", ips)
}

// verifyChain verifies certs[0] with the others as intermediates.
func verifyChain(certs []*x509.Certificate, opts x509.VerifyOptions) error {
	if len(certs) == 0 {
		return errors.New("tls: the peer sent no certificate")
	}
	opts.Intermediates = x509.NewCertPool()
	for _, cert := range certs[1:] {
		opts.Intermediates.AddCert(cert)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}

// endpointIPs are the IP addresses among the hosts of endpoints.
func endpointIPs(endpoints []string) []string {
	var ips []string
	for _, ep := range endpoints {
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			host = u.Host
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if net.ParseIP(host) != nil {
			ips = append(ips, host)
		}
	}
	return ips
}

// watchPair watches a certificate and its key.
func watchPair(role, certFile, keyFile string, f flagNames, r Reload) (*watched[tls.Certificate], error) {
	files := []watchedFile{{certFile, f.cert}, {keyFile, f.key}}
	return watch(role, files, r, func(data [][]byte) (tls.Certificate, time.Time, error) {
		pair, err := parsePair(data[0], data[1], certFile, keyFile, f)
		if err != nil {
			return pair, time.Time{}, err
		}
		// The first of the chain to expire ends the pair's use.
		notAfter := pair.Leaf.NotAfter
		for _, der := range pair.Certificate[1:] {
			if cert, err := x509.ParseCertificate(der); err == nil && cert.NotAfter.Before(notAfter) {
				notAfter = cert.NotAfter
			}
		}
		return pair, notAfter, nil
	})
}

// watchPool watches a file of CA certificates.
func watchPool(role, file, flag string, r Reload) (*watched[*x509.CertPool], error) {
	return watch(role, []watchedFile{{file, flag}}, r, func(data [][]byte) (*x509.CertPool, time.Time, error) {
		return parsePool(data[0], file, flag)
	})
}

type watchedFile struct{ path, flag string }

// watched is what some files hold, read again when they change (see Open).
type watched[T any] struct {
	role     string
	files    []watchedFile
	parse    func(data [][]byte) (T, time.Time, error)
	interval time.Duration
	logger   *slog.Logger
	metrics  *Metrics

	next    atomic.Int64 // when the files may be read again, in Unix nanoseconds
	current atomic.Pointer[loaded[T]]

	mu      sync.Mutex // held by the one handshake that reads the files
	seen    [][]byte   // the contents last parsed, loaded or refused
	readErr string     // the last error reading the files, logged once
}

type loaded[T any] struct {
	value    T
	notAfter time.Time
}

// watch reads the files a first time; an error then is the caller's.
func watch[T any](role string, files []watchedFile, r Reload, parse func([][]byte) (T, time.Time, error)) (*watched[T], error) {
	w := &watched[T]{role: role, files: files, parse: parse, interval: r.Interval, logger: r.Logger, metrics: r.Metrics}
	if w.interval <= 0 {
		w.interval = DefaultReloadInterval
	}
	if w.logger == nil {
		w.logger = slog.Default()
	}
	data, err := w.read()
	if err != nil {
		return nil, err
	}
	value, notAfter, err := parse(data)
	if err != nil {
		return nil, err
	}
	w.seen = data
	w.current.Store(&loaded[T]{value, notAfter})
	w.next.Store(time.Now().Add(w.interval).UnixNano())
	w.metrics.watch(w)
	return w, nil
}

// get is the value of the files, read again first when the interval has
// passed. While one caller reads them, the others take what is loaded.
func (w *watched[T]) get() *T {
	return &w.load().value
}

func (w *watched[T]) load() *loaded[T] {
	if time.Now().UnixNano() >= w.next.Load() && w.mu.TryLock() {
		if time.Now().UnixNano() >= w.next.Load() {
			w.check()
			w.next.Store(time.Now().Add(w.interval).UnixNano())
		}
		w.mu.Unlock()
	}
	return w.current.Load()
}

// check reads the files and loads them if they changed. w.mu is held.
// Contents that fail to load are refused once; so is a file that cannot be
// read, until it can again.
func (w *watched[T]) check() {
	data, err := w.read()
	if err != nil {
		if err.Error() != w.readErr {
			w.readErr = err.Error()
			w.refuse(err)
		}
		return
	}
	w.readErr = ""
	if equal(data, w.seen) {
		return
	}
	w.seen = data
	value, notAfter, err := w.parse(data)
	if err != nil {
		w.refuse(err)
		return
	}
	w.current.Store(&loaded[T]{value, notAfter})
	w.logger.Info("TLS files reloaded", "role", w.role, "not_after", notAfter.UTC())
}

func (w *watched[T]) refuse(err error) {
	w.metrics.refuse(w.role)
	w.logger.Warn("TLS files refused; the ones loaded before stay in use", "role", w.role, "error", err)
}

func (w *watched[T]) read() ([][]byte, error) {
	data := make([][]byte, len(w.files))
	for i, f := range w.files {
		var err error
		if data[i], err = readFile(f.path, f.flag); err != nil {
			return nil, err
		}
	}
	return data, nil
}

func (w *watched[T]) expiry() (string, time.Time) { return w.role, w.load().notAfter }

func equal(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
