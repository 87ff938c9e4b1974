package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/node"
)

func TestFlagsAndEnvironmentFillTheConfig(t *testing.T) {
	env := map[string]string{
		"ROUTEGUIDE_ETCD":            "http://a:2379, http://b:2379",
		"ROUTEGUIDE_MAX_NOTES_BYTES": "5000",
		"ROUTEGUIDE_LOG_LEVEL":       "debug",
		"ROUTEGUIDE_OTLP_ENDPOINT":   "jaeger:4317",
	}
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	cfg, opts, err := parseConfig([]string{"--max-notes-bytes=6000", "--drain-delay=0s"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Etcd, []string{"http://a:2379", "http://b:2379"}) {
		t.Errorf("Etcd = %q", cfg.Etcd)
	}
	if cfg.NoteLimits.Bytes != 6000 || cfg.DrainDelay != 0 || opts.log.level.String() != "DEBUG" || opts.log.format != "text" || cfg.OTLPEndpoint != "jaeger:4317" {
		t.Errorf("got %+v, %+v", cfg, opts)
	}
	if def := node.DefaultConfig(); cfg.LeaseTTL != def.LeaseTTL || cfg.Listen != def.Listen {
		t.Errorf("defaults not kept: %+v", cfg)
	}

	env = map[string]string{"ROUTEGUIDE_ETCD": ""}
	if cfg, _, err = parseConfig(nil, lookup, io.Discard); err != nil || len(cfg.Etcd) != 0 {
		t.Errorf("ROUTEGUIDE_ETCD= gave Etcd %q, %v; want none (standalone)", cfg.Etcd, err)
	}
}

// TestEveryValidatedFieldHasItsFlag guards that the flag names Validate puts
// in its errors are the flags that set those fields.
func TestEveryValidatedFieldHasItsFlag(t *testing.T) {
	bad := map[string]string{
		"listen":                 "nowhere",
		"advertise":              ":50051",
		"advertise-network":      "10.20.0.0",
		"metrics-listen":         "nowhere",
		"service":                "",
		"lease-ttl":              "10ms",
		"drain-delay":            "-1s",
		"shutdown-timeout":       "0s",
		"max-msg-size":           "10",
		"max-route-points":       "-1",
		"max-chat-notes":         "-1",
		"max-notes-per-location": "-1",
		"max-notes-bytes":        "-1",
		"max-note-bytes":         "0",
		"notes-max-age":          "10ms",
		"notes-write-rate":       "0",
		"tls-cert":               "/cert.pem", // without its key
		"tls-key":                "/key.pem",  // without its certificate
		"tls-client-ca":          "/ca.pem",   // without a server certificate
		"etcd-cert":              "/cert.pem",
		"etcd-key":               "/key.pem",
		"etcd-username":          "node",   // without a password
		"otlp-endpoint":          "jaeger", // without a port
	}
	for flag, value := range bad {
		_, _, err := parseConfig([]string{"--" + flag + "=" + value}, func(string) (string, bool) { return "", false }, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), "--"+flag+":") {
			t.Errorf("--%s=%q: error %v, want one naming --%s", flag, value, err, flag)
		}
	}
}

// TestDevEtcdListensBeyondThisHostOnlyWhenAskedTo: the development etcd has
// no TLS and no users, so it listens on loopback addresses only, unless
// --dev-etcd-insecure-listen (or its variable) says otherwise. Checked on
// the parsed flags: a test listens on no address other hosts reach.
func TestDevEtcdListensBeyondThisHostOnlyWhenAskedTo(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		ok   bool
	}{
		{[]string{"-dev", "--dev-etcd-listen=127.0.0.2:2379"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=[::1]:2379"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=localhost:2379"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=0.0.0.0:2379"}, nil, false},
		{[]string{"-dev", "--dev-etcd-listen=192.0.2.1:2379"}, nil, false},
		{[]string{"-dev", "--dev-etcd-listen=etcd.example:2379"}, nil, false},
		{[]string{"-dev", "--dev-etcd-listen=0.0.0.0:2379", "--dev-etcd-insecure-listen"}, nil, true},
		{[]string{"-dev", "--dev-etcd-listen=:2379"}, map[string]string{"ROUTEGUIDE_DEV_ETCD_INSECURE_LISTEN": "true"}, true},
	}
	for _, tt := range tests {
		lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
		_, opts, err := parseConfig(tt.args, lookup, io.Discard)
		if (err == nil) != tt.ok {
			t.Errorf("%v %v: error %v; want accepted %t", tt.args, tt.env, err, tt.ok)
		}
		if err == nil && opts.devEtcdListen != strings.TrimPrefix(tt.args[1], "--dev-etcd-listen=") {
			t.Errorf("%v: dev etcd listens on %q", tt.args, opts.devEtcdListen)
		}
	}
}
