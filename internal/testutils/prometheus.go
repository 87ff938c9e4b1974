package testutils

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequirePrometheus is the variable that CI sets to 1 so that the tests
// that need Debian's prometheus package fail, rather than skip, where it is
// missing.
const RequirePrometheus = "ROUTEGUIDE_REQUIRE_PROMETHEUS"

// PrometheusBinary finds name, prometheus or promtool, from Debian's
// package prometheus, on PATH or in /usr/bin; where it is missing, it skips
// tb, or fails it when RequirePrometheus is 1.
func PrometheusBinary(tb testing.TB, name string) string {
	tb.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if path := filepath.Join("/usr/bin", name); fileExists(path) {
		return path
	}
	if os.Getenv(RequirePrometheus) == "1" {
		tb.Fatalf("no %s, and %s=1; install it: apt-get install prometheus", name, RequirePrometheus)
	}
	tb.Skipf("no %s (apt-get install prometheus); set %s=1 to fail instead", name, RequirePrometheus)
	return ""
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
