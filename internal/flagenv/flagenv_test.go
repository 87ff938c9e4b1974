package flagenv

import (
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

func newFlags() (*flag.FlagSet, *string, *time.Duration) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "")
	ttl := fs.Duration("lease-ttl", 10*time.Second, "")
	return fs, etcd, ttl
}

func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func TestVarNameUpperCasesAndUnderscores(t *testing.T) {
	if got := VarName("lease-ttl"); got != "ROUTEGUIDE_LEASE_TTL" {
		t.Errorf("VarName(lease-ttl) = %q", got)
	}
}

func TestEnvironmentSetsDefaultsAndFlagsWin(t *testing.T) {
	tests := []struct {
		name     string
		vars     map[string]string
		args     []string
		wantEtcd string
		wantTTL  time.Duration
	}{
		{"defaults", nil, nil, "http://127.0.0.1:2379", 10 * time.Second},
		{"from the environment", map[string]string{"ROUTEGUIDE_LEASE_TTL": "3s", "ROUTEGUIDE_ETCD": "http://e:2379"}, nil, "http://e:2379", 3 * time.Second},
		{"empty variable still sets", map[string]string{"ROUTEGUIDE_ETCD": ""}, nil, "", 10 * time.Second},
		{"flag beats the environment", map[string]string{"ROUTEGUIDE_LEASE_TTL": "3s"}, []string{"--lease-ttl=5s"}, "http://127.0.0.1:2379", 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, etcd, ttl := newFlags()
			if err := Parse(fs, tt.args, env(tt.vars)); err != nil {
				t.Fatal(err)
			}
			if *etcd != tt.wantEtcd || *ttl != tt.wantTTL {
				t.Errorf("etcd=%q ttl=%v, want %q %v", *etcd, *ttl, tt.wantEtcd, tt.wantTTL)
			}
		})
	}
}

func TestBadValuesGiveOneLineNamingTheSource(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"bad environment value", map[string]string{"ROUTEGUIDE_LEASE_TTL": "soon"}, nil, `invalid value "soon" for ROUTEGUIDE_LEASE_TTL`},
		{"bad flag value", nil, []string{"--lease-ttl", "soon"}, `invalid value "soon" for flag -lease-ttl`},
		{"unknown flag", nil, []string{"--lease"}, "flag provided but not defined: -lease"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _, _ := newFlags()
			err := Parse(fs, tt.args, env(tt.vars))
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestHelpIsReportedAsHelp(t *testing.T) {
	fs, _, _ := newFlags()
	if err := Parse(fs, []string{"-h"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestListSplitsOnCommasAndEmptyIsEmpty(t *testing.T) {
	tests := []struct {
		value string
		want  []string
	}{
		{"http://a:2379", []string{"http://a:2379"}},
		{"http://a:2379, http://b:2379,", []string{"http://a:2379", "http://b:2379"}},
		{"", nil},
		{" , ", nil},
	}
	for _, tt := range tests {
		l := List{"before"}
		if err := l.Set(tt.value); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(l, tt.want) {
			t.Errorf("Set(%q) = %q, want %q", tt.value, l, tt.want)
		}
	}
}
