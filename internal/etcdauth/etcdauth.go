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
	"os"
	"strings"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

// PasswordVar is the environment variable that holds the etcd password. It
// sets no flag: there is deliberately no --etcd-password.
const PasswordVar = "ROUTEGUIDE_ETCD_PASSWORD"

// tlsFlags is the prefix of the TLS flags: --etcd-ca, --etcd-cert, --etcd-key.
const tlsFlags = "etcd"

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
	fs.StringVar(&c.TLS.CAFile, "etcd-ca", c.TLS.CAFile, "CA `file` (PEM) that etcd's certificate must chain to; give https:// endpoints (default: the system's roots)")
	fs.StringVar(&c.TLS.CertFile, "etcd-cert", c.TLS.CertFile, "client certificate `file` (PEM) for etcd, with --etcd-key, when etcd requires client certificates")
	fs.StringVar(&c.TLS.KeyFile, "etcd-key", c.TLS.KeyFile, "private key `file` (PEM) of --etcd-cert")
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
	if err := c.TLS.Validate(tlsFlags); err != nil {
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

// EtcdConfig reads the files and returns the configuration of an etcd
// client for endpoints.
func (c Config) EtcdConfig(endpoints []string) (discovery.EtcdConfig, error) {
	if err := c.Validate(); err != nil {
		return discovery.EtcdConfig{}, err
	}
	cfg := discovery.EtcdConfig{Endpoints: endpoints, Username: c.Username, Password: string(c.Password)}
	if c.PasswordFile != "" {
		password, err := readPassword(c.PasswordFile)
		if err != nil {
			return discovery.EtcdConfig{}, err
		}
		cfg.Password = password
	}
	tlsCfg, err := c.TLS.Config(tlsFlags)
	if err != nil {
		return discovery.EtcdConfig{}, err
	}
	cfg.TLS = tlsCfg
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
