package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v2"
)

// composeFile is the subset of a compose file these tests read.
type composeFile struct {
	Services map[string]struct {
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
	} `yaml:"services"`
}

func readCompose(t *testing.T, path string) (composeFile, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return c, string(data)
}

// tlsDirMount starts every mount of the generator's output directory:
// deploy/tls/out, unless ROUTEGUIDE_TLS_DIR names another (as up.sh and the
// end-to-end test do).
const tlsDirMount = "${ROUTEGUIDE_TLS_DIR:-./tls/out}:/tls:"

// TestOverrideMountsWhatTheGeneratorWrites guards the compose variant
// against drifting from its files: every service it changes exists in the
// base file, every host path it mounts exists (or is the generator's output
// directory), and every /tls/ file it names is one the generator writes.
func TestOverrideMountsWhatTheGeneratorWrites(t *testing.T) {
	base, _ := readCompose(t, "../docker-compose.yml")
	override, text := readCompose(t, "../docker-compose.tls.yml")
	out := t.TempDir()
	if err := write(out, false); err != nil {
		t.Fatal(err)
	}
	for name, svc := range override.Services {
		if _, ok := base.Services[name]; !ok {
			t.Errorf("the override changes service %s, which docker-compose.yml does not have", name)
		}
		for _, v := range svc.Volumes {
			if strings.HasPrefix(v, tlsDirMount) {
				continue // what `go run ./deploy/tls` writes
			}
			host, _, _ := strings.Cut(v, ":")
			if _, err := os.Stat(filepath.Join("..", host)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, host, err)
			}
		}
		for k, v := range svc.Environment {
			if strings.Contains(strings.ToUpper(k), "PASSWORD") && !strings.HasSuffix(k, "_FILE") {
				t.Errorf("service %s sets %s: passwords come from files, never from the compose file", name, k)
			}
			if k == "ROUTEGUIDE_ETCD" && !strings.HasPrefix(v, "https://") {
				t.Errorf("service %s reaches etcd at %s, not over https", name, v)
			}
		}
	}
	// Paths inside the containers: /tls/NAME after a blank, quote, = or [,
	// outside comments.
	text = regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(text, "")
	named := regexp.MustCompile(`(?:^|[\s"'=\[,])/tls/([A-Za-z0-9._-]+)`).FindAllStringSubmatch(text, -1)
	if len(named) == 0 {
		t.Fatal("the override names no file under /tls/")
	}
	for _, m := range named {
		if _, err := os.Stat(filepath.Join(out, m[1])); err != nil {
			t.Errorf("the override names /tls/%s, which the generator does not write", m[1])
		}
	}
	if _, err := os.Stat("prometheus.yml"); err != nil {
		t.Error(err)
	}
}

// TestCertificatesFitTheCluster checks each certificate for the names it is
// dialled by in the cluster.
func TestCertificatesFitTheCluster(t *testing.T) {
	out := t.TempDir()
	if err := write(out, false); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(read(t, out, "ca.pem")) {
		t.Fatal("ca.pem holds no certificate")
	}
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	tests := []struct {
		file  string
		names []string // "" checks the usage alone
		usage x509.ExtKeyUsage
	}{
		{"etcd.pem", []string{"etcd1", "etcd2", "etcd3", "127.0.0.1"}, server},
		{"etcd.pem", []string{""}, client}, // peers authenticate to each other
		{"node.pem", []string{service, "127.0.0.1"}, server},
		{"node.pem", []string{""}, client}, // to etcd
		{"client.pem", []string{""}, client},
	}
	for _, tt := range tests {
		block, _ := pem.Decode(read(t, out, tt.file))
		if block == nil {
			t.Fatalf("%s holds no PEM block", tt.file)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range tt.names {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{tt.usage}}); err != nil {
				t.Errorf("%s for %q: %v", tt.file, name, err)
			}
		}
	}
	for _, user := range users {
		// etcdctl reads a password from stdin up to the first blank.
		password := strings.TrimSuffix(string(read(t, out, "etcd-"+user+"-password")), "\n")
		if len(password) < 16 || strings.ContainsAny(password, " \t\r\n") {
			t.Errorf("the password of %s is %d characters or has blanks", user, len(password))
		}
	}
}

// TestEtcdctlInTheMembersIsAUser guards the members' healthcheck (and
// up.sh): etcd takes the common name of etcdctl's certificate for the user,
// and logs an error with a stack trace at every request of a name it has no
// user for. The member's own certificate, "etcd", is no user.
func TestEtcdctlInTheMembersIsAUser(t *testing.T) {
	override, _ := readCompose(t, "../docker-compose.tls.yml")
	out := t.TempDir()
	if err := write(out, false); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"etcd1", "etcd2", "etcd3"} {
		svc, ok := override.Services[name]
		if !ok {
			t.Fatalf("the override has no service %s", name)
		}
		file, ok := strings.CutPrefix(svc.Environment["ETCDCTL_CERT"], "/tls/")
		if !ok {
			t.Fatalf("%s: ETCDCTL_CERT is %q, not a file under /tls/", name, svc.Environment["ETCDCTL_CERT"])
		}
		block, _ := pem.Decode(read(t, out, file))
		if block == nil {
			t.Fatalf("%s holds no PEM block", file)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cn := cert.Subject.CommonName; !slices.Contains(users, cn) {
			t.Errorf("%s: etcdctl shows %s, whose common name %q is none of the etcd users %v", name, file, cn, users)
		}
	}
}

func TestWriteKeepsExistingFilesUnlessForced(t *testing.T) {
	out := t.TempDir()
	if err := write(out, false); err != nil {
		t.Fatal(err)
	}
	before := read(t, out, "ca.pem")
	if err := write(out, false); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Errorf("second write: %v, want a refusal that mentions -force", err)
	}
	if err := write(out, true); err != nil {
		t.Fatal(err)
	}
	if slices.Equal(before, read(t, out, "ca.pem")) {
		t.Error("-force kept the old CA")
	}
}

// TestComposeAcceptsTheOverride asks Compose itself, where it is installed,
// to merge the two files. It needs no Docker daemon.
func TestComposeAcceptsTheOverride(t *testing.T) {
	if out, err := exec.Command("bash", "../compose", "--which").CombinedOutput(); err != nil {
		t.Skipf("no Compose: %s", out)
	}
	argv := []string{"bash", "../compose", "-p", "routeguide-tls", "-f", "../docker-compose.yml", "-f", "../docker-compose.tls.yml", "config", "-q"}
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func read(t *testing.T, dir, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
