package node

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

func TestValidateNamesTheFlagAtFault(t *testing.T) {
	tests := []validateCase{
		{"listen without a port", func(c *Config) { c.Listen = "localhost" }, "--listen"},
		{"listen port out of range", func(c *Config) { c.Listen = ":65536" }, "--listen"},
		{"listen on any port", func(c *Config) { c.Listen = "127.0.0.1:0" }, ""},
		{"advertise without a host", func(c *Config) { c.Advertise = ":50051" }, "--advertise"},
		{"advertise port 0", func(c *Config) { c.Advertise = "10.0.0.1:0" }, "--advertise"},
		{"advertise host and port", func(c *Config) { c.Advertise = "10.0.0.1:50051" }, ""},
		{"advertise network not a CIDR", func(c *Config) { c.AdvertiseNetwork = "10.20.0.0" }, "--advertise-network"},
		{"advertise network", func(c *Config) { c.AdvertiseNetwork = "10.20.0.0/24" }, ""},
		{"metrics-listen not an address", func(c *Config) { c.MetricsListen = "metrics" }, "--metrics-listen"},
		{"metrics disabled", func(c *Config) { c.MetricsListen = "" }, ""},
		{"standalone", func(c *Config) { c.Etcd = nil }, ""},
		{"empty service", func(c *Config) { c.Service = "" }, "--service"},
		{"service with a slash", func(c *Config) { c.Service = "routeguide/canary" }, "--service"},
		{"node id with a slash", func(c *Config) { c.NodeID = "a/b" }, "--node-id"},
		{"lease shorter than a second", func(c *Config) { c.LeaseTTL = 500 * time.Millisecond }, "--lease-ttl"},
		{"lease of a fraction of a second", func(c *Config) { c.LeaseTTL = 1500 * time.Millisecond }, "--lease-ttl"},
		{"negative drain delay", func(c *Config) { c.DrainDelay = -time.Second }, "--drain-delay"},
		{"no drain delay", func(c *Config) { c.DrainDelay = 0 }, ""},
		{"zero shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "--shutdown-timeout"},
		{"tiny messages", func(c *Config) { c.MaxMessageBytes = 1023 }, "--max-msg-size"},
		{"negative route points", func(c *Config) { c.Limits.RoutePoints = -1 }, "--max-route-points"},
		{"negative chat notes", func(c *Config) { c.Limits.ChatNotes = -1 }, "--max-chat-notes"},
		{"negative notes per location", func(c *Config) { c.NoteLimits.PerLocation = -1 }, "--max-notes-per-location"},
		{"negative notes bytes", func(c *Config) { c.NoteLimits.Bytes = -1 }, "--max-notes-bytes"},
		{"unbounded notes per location in a cluster", func(c *Config) { c.NoteLimits.PerLocation = 0 }, "--max-notes-per-location"},
		{"empty note messages only", func(c *Config) { c.NoteLimits.MessageBytes = 0 }, "--max-note-bytes"},
		{"note messages too large for etcd", func(c *Config) { c.NoteLimits.MessageBytes = 1 << 20 }, "--max-note-bytes"},
		{"notes per location past the cap", func(c *Config) { c.NoteLimits.PerLocation = 10_000_001 }, "--max-notes-per-location"},
		{"notes per location past the cap when standalone", func(c *Config) { c.Etcd, c.NoteLimits.PerLocation = nil, 10_000_001 }, "--max-notes-per-location"},
		{"answers past the cap", func(c *Config) { c.NoteLimits.AnswerBytes = 1 << 30 }, "--max-chat-answer-bytes"},
		{"answers that cannot hold a note", func(c *Config) { c.NoteLimits.AnswerBytes = c.NoteLimits.MessageBytes }, "--max-chat-answer-bytes"},
		{"notes kept under a second", func(c *Config) { c.NoteMaxAge = 500 * time.Millisecond }, "--notes-max-age"},
		{"no notes written to etcd", func(c *Config) { c.NotesWriteRate = 0 }, "--notes-write-rate"},
		{"unbounded limits when standalone", func(c *Config) {
			c.Etcd = nil
			c.Limits.RoutePoints, c.Limits.ChatNotes, c.NoteLimits.PerLocation, c.NoteLimits.Bytes = 0, 0, 0, 0
		}, ""},
	}
	checkValidate(t, tests)
}

// validateCase is a change to DefaultConfig and the flag Validate must then
// name, "" when the config stays valid.
type validateCase struct {
	name   string
	change func(*Config)
	flag   string
}

// checkValidate runs cases: each error is one line that starts with the flag.
func checkValidate(t *testing.T, cases []validateCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			switch {
			case tt.flag == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.flag != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.flag+": ") || strings.Contains(err.Error(), "\n")):
				t.Errorf("Validate() = %v, want one line starting with %s", err, tt.flag)
			}
		})
	}
}
