package clientcli

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
)

func TestFlagsBeforeTheCommandWorkAfterItToo(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	tests := []struct {
		name string
		args []string
		json bool
	}{
		{"load, flag last", []string{"--target", addr, "load", "--requests", "10", "--json"}, true},
		{"load, flag between load's", []string{"load", "--requests", "10", "--target=" + addr, "--json"}, true},
		{"get, after a negative longitude", []string{"get", "40.7484405", "-73.9856644", "--json", "--target", addr}, true},
		{"after the command wins", []string{"--json", "--target", addr, "get", "40.7484405", "-73.9856644", "--json=false"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := run(t, invocation{args: tt.args})
			if out.code != ExitOK {
				t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
			}
			if isJSON := strings.HasPrefix(out.stdout, "{"); isJSON != tt.json {
				t.Errorf("stdout %q; want JSON: %v", out.stdout, tt.json)
			}
		})
	}
	out := run(t, invocation{args: []string{"get", "1", "1", "--timeout"}})
	if out.code != ExitUsage || out.stderr != "client: flag needs an argument: -timeout\n" {
		t.Errorf("a flag without its value at the end: exit %d, stderr %q", out.code, out.stderr)
	}
}

func TestLoadFlagsAndTheFlagsBeforeTheCommandHaveNoNameInCommon(t *testing.T) {
	defaults := DefaultConfig()
	cfg := load.Config{}
	global, loadFlags := flag.NewFlagSet("client", flag.ContinueOnError), flag.NewFlagSet("load", flag.ContinueOnError)
	defaults.Register(global)
	registerLoad(loadFlags, &cfg)
	loadFlags.VisitAll(func(f *flag.Flag) {
		if global.Lookup(f.Name) != nil {
			t.Errorf("--%s is both a load flag and a flag before the command: after load it would be taken for the latter", f.Name)
		}
	})
}

func TestDistancesReadForPeople(t *testing.T) {
	for metres, want := range map[int32]string{
		0: "0 m", 999: "999 m", 1000: "1.0 km", 12_345: "12.3 km", 99_949: "99.9 km", 100_000: "100 km", 664_299_962: "664300 km",
	} {
		if got := distanceText(metres); got != want {
			t.Errorf("distanceText(%d) = %q, want %q", metres, got, want)
		}
	}
}

// documentedGet is a get example: "get LAT LON" in decimal degrees.
var documentedGet = regexp.MustCompile(`\bget (-?[0-9.]+) (-?[0-9.]+)`)

// TestDocumentedGetExamplesFindAFeature: a newcomer's first command finds
// something, in the README, in docs/ and in the usage text.
func TestDocumentedGetExamplesFindAFeature(t *testing.T) {
	sources := map[string]string{"the usage": run(t, invocation{args: []string{"help"}}).stderr}
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	for _, file := range append([]string{"../../README.md"}, docs...) {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		sources[filepath.Base(file)] = string(text)
	}
	for source, text := range sources {
		examples := documentedGet.FindAllStringSubmatch(text, -1)
		if len(examples) == 0 && (source == "README.md" || source == "the usage") {
			t.Errorf("%s has no get example", source)
		}
		for _, m := range examples {
			p, err := parsePoint(m[1], m[2])
			if err != nil {
				t.Errorf("%s: %q: %v", source, m[0], err)
				continue
			}
			if f := features.Default().At(p.Latitude, p.Longitude); f == nil || f.GetName() == "" {
				t.Errorf("%s: %q finds no feature", source, m[0])
			}
		}
	}
}
