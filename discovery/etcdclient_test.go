package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/testcerts"
)

// startAuthEtcd starts etcd over TLS with authentication on, and a user
// "node" that may read and write under "routeguide/".
func startAuthEtcd(t *testing.T) (*localetcd.Server, EtcdConfig) {
	t.Helper()
	s, tlsCfg := etcdtest.StartSecured(t, testcerts.New(t), etcdtest.Options{},
		localetcd.User{Name: "node", Password: "node-secret", Prefixes: []string{"routeguide/"}})
	return s, EtcdConfig{Endpoints: []string{s.ClientURL()}, TLS: tlsCfg}
}

func TestEtcdCredentials(t *testing.T) {
	_, base := startAuthEtcd(t)
	tests := []struct {
		name, user, password string
		key, prefix          string
		wantErr              error  // from NewEtcdClient or CheckAccess
		wantMsg              string // in the error
	}{
		{"right user on its prefix", "node", "node-secret", "routeguide/n1", "routeguide/", nil, ""},
		{"wrong password", "node", "bad-pass-123", "routeguide/n1", "routeguide/", rpctypes.ErrAuthFailed, "authentication failed: wrong username or password"},
		{"unknown user", "nobody", "x", "routeguide/n1", "routeguide/", rpctypes.ErrAuthFailed, "authentication failed"},
		{"no user", "", "", "routeguide/n1", "routeguide/", rpctypes.ErrUserEmpty, "requires a user"},
		{"right user on another prefix", "node", "node-secret", "other/n1", "other/", rpctypes.ErrPermissionDenied, "permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.Username, cfg.Password = tt.user, tt.password
			start := time.Now()
			cli, err := NewEtcdClient(cfg)
			if err == nil {
				defer cli.Close()
				err = CheckAccess(testContext(t), cli, tt.key, tt.prefix)
			}
			// An error that came from waiting out a timeout would not be
			// an access error: the checks below also prove it came at once.
			t.Logf("answered in %v", time.Since(start))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !IsAuthError(err) {
				t.Errorf("IsAuthError(%v) = false", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to say %q", err, tt.wantMsg)
			}
			if tt.password != "" && strings.Contains(err.Error(), tt.password) {
				t.Errorf("err = %q shows the password", err)
			}
		})
	}
}

func TestCheckAccessChangesNothing(t *testing.T) {
	_, cfg := startAuthEtcd(t)
	cfg.Username, cfg.Password = "node", "node-secret"
	cli, err := NewEtcdClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := testContext(t)
	if err := CheckAccess(ctx, cli, "routeguide/n1", "routeguide/"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "routeguide/n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Errorf("CheckAccess wrote %s", resp.Kvs[0].Key)
	}
}

func TestIsAuthErrorIgnoresOtherErrors(t *testing.T) {
	for _, err := range []error{errors.New("connection refused"), rpctypes.ErrTimeout, rpctypes.ErrNoLeader, nil} {
		if IsAuthError(err) {
			t.Errorf("IsAuthError(%v) = true", err)
		}
	}
}

func TestEtcdConfigNeverPrintsThePassword(t *testing.T) {
	cfg := EtcdConfig{Endpoints: []string{"https://etcd:2379"}, Username: "node", Password: "hunter2-secret"}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("etcd", "config", cfg)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("etcd", "config", cfg)
	asJSON, err := json.Marshal(struct{ Etcd EtcdConfig }{cfg})
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", &cfg), logs.String(), string(asJSON)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("the password shows in %q", out)
		}
		if !strings.Contains(out, "node") {
			t.Errorf("the user name is missing from %q", out)
		}
	}
}

// TestUserWaitsForEtcdAtMostAuthTimeout: with a user, etcd's client fetches
// a token as it is made; with etcd out of reach that must end, with an
// error that says so, after AuthTimeout.
func TestUserWaitsForEtcdAtMostAuthTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	start := time.Now()
	cli, err := NewEtcdClient(EtcdConfig{Endpoints: []string{dead}, Username: "node", Password: "pw", AuthTimeout: 500 * time.Millisecond})
	if err == nil {
		cli.Close()
		t.Fatal("NewEtcdClient with a user and no etcd succeeded")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("NewEtcdClient took %v with an AuthTimeout of 500ms", took)
	}
	if !strings.Contains(err.Error(), "no answer from etcd") || IsAuthError(err) {
		t.Errorf("err = %v; want it to say etcd did not answer, and not be an access error", err)
	}
}
