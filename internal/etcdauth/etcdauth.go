// Package etcdauth is how a node or a client proves who it is to etcd and
// checks that etcd is etcd: TLS files, and a user whose password never comes
// from the command line, where any user of the machine could read it.
// Nodes and clients share its flags.
package etcdauth

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

// PasswordVar is the environment variable that holds the etcd password. It
// sets no flag: there is deliberately no --etcd-password.
const PasswordVar = "ROUTEGUIDE_ETCD_PASSWORD"

// Config is how to reach etcd securely. The zero Config is plain, anonymous
// etcd, as in development.
type Config struct {
	// TLS is the CA that etcd's certificate must chain to (empty: the
	// system's roots, for https endpoints) and the client certificate
	// etcd asks for with --client-cert-auth. Its ServerName is unused.
	TLS tlsfiles.Client
	// Username is the etcd user; it needs a password from Password or
	// PasswordFile.
	Username string
	// Password is the user's password, taken from PasswordVar.
	Password Password
	// PasswordFile is a file whose first line is the password (a Docker or
	// Kubernetes secret, say); it is read when the client is made.
	PasswordFile string
}

// Password is a secret that prints as "[redacted]" however it is printed or
// logged, so that a configuration that holds one is safe to print.
type Password string

const redacted = "[redacted]"

func (p Password) String() string               { return redacted }
func (p Password) GoString() string             { return redacted }
func (p Password) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (p Password) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Register adds the flags that set c to fs.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.TLS.CAFile, tlsfiles.EtcdFlags+"-ca", c.TLS.CAFile, "CA `file` (PEM) that etcd's certificate must chain to; give https:// endpoints (default: the system's roots)")
	fs.StringVar(&c.TLS.CertFile, tlsfiles.EtcdFlags+"-cert", c.TLS.CertFile, "client certificate `file` (PEM) for etcd, with --etcd-key, when etcd requires client certificates")
	fs.StringVar(&c.TLS.KeyFile, tlsfiles.EtcdFlags+"-key", c.TLS.KeyFile, "private key `file` (PEM) of --etcd-cert")
	fs.StringVar(&c.Username, "etcd-username", c.Username, "etcd `user`; its password comes from "+PasswordVar+" or --etcd-password-file")
	fs.StringVar(&c.PasswordFile, "etcd-password-file", c.PasswordFile, "`file` whose first line is the password of --etcd-username (or set "+PasswordVar+")")
}

// LookupPassword takes the password from PasswordVar through lookup
// (os.LookupEnv in a program). Call it after the flags are parsed.
func (c *Config) LookupPassword(lookup func(string) (string, bool)) {
	if v, ok := lookup(PasswordVar); ok {
		c.Password = Password(v)
	}
}

// Validate checks what goes together, without reading any file; errors
// name the flag or variable at fault.
func (c Config) Validate() error {
	if err := c.TLS.Validate(tlsfiles.EtcdFlags); err != nil {
		return err
	}
	switch {
	case c.Password != "" && c.PasswordFile != "":
		return fmt.Errorf("--etcd-password-file: %s is set too; give the password one way", PasswordVar)
	case c.Username == "" && (c.Password != "" || c.PasswordFile != ""):
		return errors.New("--etcd-username: not set, but an etcd password is")
	case strings.Contains(c.Username, ":"):
		// etcdctl and etcd's own flags read "user:password"; refuse what
		// looks like a password on the command line.
		return errors.New("--etcd-username: must not contain ':'; the password comes from " + PasswordVar + " or --etcd-password-file")
	case c.Username != "" && c.Password == "" && c.PasswordFile == "":
		return fmt.Errorf("--etcd-username: no password; set %s or --etcd-password-file", PasswordVar)
	}
	return nil
}

// ValidateFor is Validate, and checks that the settings fit endpoints, the
// etcd URLs they are for. etcd's client drops TLS for an http:// endpoint
// without a word, and picks one way to connect for all endpoints from the
// first one's scheme; so TLS files with http:// endpoints, or a mix of
// http:// and https://, would quietly not do what they say. A password
// over plain http:// would cross the network in clear text: it is refused
// unless every endpoint is on this host.
func (c Config) ValidateFor(endpoints []string) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var plain, secure, remotePlain int
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			continue // no scheme: etcd's client uses TLS when it is configured
		}
		switch u.Scheme {
		case "http":
			plain++
			if !discovery.IsLoopbackHost(u.Hostname()) {
				remotePlain++
			}
		case "https":
			secure++
		}
	}
	switch {
	case plain > 0 && secure > 0:
		return errors.New("--etcd: mixes http:// and https:// endpoints; etcd's client connects to all of them the way of the first")
	case plain > 0 && c.TLS.Enabled():
		return errors.New("--etcd: http:// endpoints with --etcd-ca, --etcd-cert or --etcd-key; use https:// endpoints, or etcd's client ignores the TLS files")
	case remotePlain > 0 && c.Username != "":
		return errors.New("--etcd-username: the password would cross the network in clear text to http:// endpoints; use https:// endpoints with --etcd-ca")
	}
	return nil
}

// EtcdConfig reads the files and returns the configuration of an etcd
// client for endpoints; its TLS files are read again when they change, at
// the default interval, unlogged and uncounted (see Open).
func (c Config) EtcdConfig(endpoints []string) (discovery.EtcdConfig, error) {
	if err := c.ValidateFor(endpoints); err != nil {
		return discovery.EtcdConfig{}, err
	}
	creds, err := c.Open(tlsfiles.Reload{})
	if err != nil {
		return discovery.EtcdConfig{}, err
	}
	return creds.For(endpoints)
}

// Credentials are the password and TLS files of a Config, read: one set
// for every etcd client of a process, whatever their endpoints.
type Credentials struct {
	cfg      Config
	password string
	tls      *tlsfiles.ClientTLS // nil without TLS files
}

// Open reads the password file and the TLS files, which are read again
// when they change, as r says: a renewed client certificate or etcd CA is
// taken by the next connection to etcd.
func (c Config) Open(r tlsfiles.Reload) (*Credentials, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	creds := &Credentials{cfg: c, password: string(c.Password)}
	if c.PasswordFile != "" {
		password, err := readPassword(c.PasswordFile)
		if err != nil {
			return nil, err
		}
		creds.password = password
	}
	var err error
	if creds.tls, err = c.TLS.Open(tlsfiles.EtcdFlags, r); err != nil {
		return nil, err
	}
	return creds, nil
}

// For is the configuration of an etcd client for endpoints.
func (c *Credentials) For(endpoints []string) (discovery.EtcdConfig, error) {
	if err := c.cfg.ValidateFor(endpoints); err != nil {
		return discovery.EtcdConfig{}, err
	}
	cfg := discovery.EtcdConfig{Endpoints: endpoints, Username: c.cfg.Username, Password: c.password}
	if c.tls != nil {
		cfg.TLS = c.tls.Config(endpoints)
	}
	return cfg, nil
}

// readPassword reads the first line of file: secrets are often written
// with a trailing newline, which is not part of the password.
func readPassword(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--etcd-password-file: %w", err)
	}
	password, _, _ := strings.Cut(string(data), "\n")
	password = strings.TrimSuffix(password, "\r")
	if password == "" {
		return "", fmt.Errorf("--etcd-password-file: %s holds no password on its first line", file)
	}
	return password, nil
}
