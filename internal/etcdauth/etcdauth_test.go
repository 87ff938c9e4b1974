package etcdauth

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
)

const secret = "s3cret-etcd-pw"

func TestValidateNamesTheFlag(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"nothing", Config{}, ""},
		{"user and password", Config{Username: "node", Password: secret}, ""},
		{"user and password file", Config{Username: "node", PasswordFile: "/run/secrets/pw"}, ""},
		{"user without password", Config{Username: "node"}, "--etcd-username: no password; set ROUTEGUIDE_ETCD_PASSWORD or --etcd-password-file"},
		{"password without user", Config{Password: secret}, "--etcd-username: not set"},
		{"password file without user", Config{PasswordFile: "/pw"}, "--etcd-username: not set"},
		{"password both ways", Config{Username: "node", Password: secret, PasswordFile: "/pw"}, "--etcd-password-file: ROUTEGUIDE_ETCD_PASSWORD is set too"},
		{"user:password", Config{Username: "node:" + secret}, "--etcd-username: must not contain ':'"},
		{"cert without key", Config{TLS: tlsfiles.Client{CertFile: "/c"}}, "--etcd-cert: set without --etcd-key"},
		{"key without cert", Config{TLS: tlsfiles.Client{KeyFile: "/k"}}, "--etcd-key: set without --etcd-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), secret):
				t.Errorf("Validate() = %v shows the password", err)
			}
		})
	}
}

func TestSettingsMustFitTheEndpointsScheme(t *testing.T) {
	user := Config{Username: "node", Password: secret}
	withCA := Config{TLS: tlsfiles.Client{CAFile: "/ca.pem"}}
	tests := []struct {
		name      string
		cfg       Config
		endpoints []string
		want      string // "" for valid
	}{
		{"nothing over http", Config{}, []string{"http://etcd1:2379", "http://etcd2:2379"}, ""},
		{"TLS over https", withCA, []string{"https://etcd1:2379"}, ""},
		{"TLS without a scheme", withCA, []string{"etcd1:2379"}, ""},
		{"TLS files over http", withCA, []string{"http://etcd1:2379"}, "--etcd: http:// endpoints with --etcd-ca"},
		{"mixed schemes", Config{}, []string{"https://etcd1:2379", "http://etcd2:2379"}, "--etcd: mixes http:// and https://"},
		{"password over https", user, []string{"https://etcd1:2379"}, ""},
		{"password over http to this host", user, []string{"http://127.0.0.1:2379", "http://localhost:2379", "http://[::1]:2379"}, ""},
		{"password over http to another host", user, []string{"http://127.0.0.1:2379", "http://etcd2:2379"}, "--etcd-username: the password would cross the network in clear text"},
		{"what Validate refuses", Config{Username: "node"}, []string{"https://etcd1:2379"}, "--etcd-username: no password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.ValidateFor(tt.endpoints)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("ValidateFor(%q) = %v, want nil", tt.endpoints, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ValidateFor(%q) = %v, want %q", tt.endpoints, err, tt.want)
			case err != nil && strings.Contains(err.Error(), secret):
				t.Errorf("ValidateFor(%q) = %v shows the password", tt.endpoints, err)
			}
		})
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	certs := testcerts.New(t)
	env := map[string]string{
		"ROUTEGUIDE_ETCD_USERNAME": "node",
		"ROUTEGUIDE_ETCD_CA":       certs.CA,
		PasswordVar:                secret,
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.Register(fs)
	if err := flagenv.Parse(fs, []string{"--etcd-cert", certs.ClientCert, "--etcd-key", certs.ClientKey}, lookup); err != nil {
		t.Fatal(err)
	}
	c.LookupPassword(lookup)
	cfg, err := c.EtcdConfig([]string{"https://127.0.0.1:2379"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Username != "node" || cfg.Password != secret {
		t.Errorf("user %q, password set %t; want node and the password from %s", cfg.Username, cfg.Password == secret, PasswordVar)
	}
	// The CA is checked in VerifyConnection, and the certificate given by
	// GetClientCertificate, so that both follow their files.
	if cfg.TLS == nil || cfg.TLS.VerifyConnection == nil || cfg.TLS.GetClientCertificate == nil {
		t.Fatalf("TLS = %+v, want the CA and the client certificate", cfg.TLS)
	}
	if cert, err := cfg.TLS.GetClientCertificate(&tls.CertificateRequestInfo{}); err != nil || cert.Leaf == nil || cert.Leaf.Subject.CommonName != testcerts.ClientName {
		t.Errorf("client certificate %v, %v; want the one of --etcd-cert", cert, err)
	}

	// No flag takes the password: it must not be given on a command line.
	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	(&Config{}).Register(fs)
	if err := flagenv.Parse(fs, []string{"--etcd-password", secret}, lookup); err == nil {
		t.Error("--etcd-password is accepted; the password must not come from the command line")
	}
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		want          string // the password, or the error
		ok            bool
	}{
		{"trailing newline", secret + "\n", secret, true},
		{"CRLF", secret + "\r\n", secret, true},
		{"no newline", secret, secret, true},
		{"only the first line", secret + "\nsomething else\n", secret, true},
		{"empty", "", "holds no password", false},
		{"missing", "", "--etcd-password-file: open", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprint(i))
			if tt.name != "missing" {
				if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := Config{Username: "node", PasswordFile: file}.EtcdConfig([]string{"http://127.0.0.1:2379"})
			if tt.ok {
				if err != nil || cfg.Password != tt.want {
					t.Errorf("password %q, err %v; want %q", cfg.Password, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestPasswordNeverPrinted prints and logs a Config every way a program
// might; the password must show in none of them.
func TestPasswordNeverPrinted(t *testing.T) {
	c := Config{Username: "node", Password: secret}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "etcd", c, "password", c.Password)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "etcd", c, "password", c.Password)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c), fmt.Sprint(c.Password), string(js), logs.String()} {
		if strings.Contains(out, secret) {
			t.Errorf("the password shows in %s", out)
		}
	}
}
