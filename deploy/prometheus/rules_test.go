// Package prometheus holds the compose Prometheus's configuration and
// rules; its test checks them with Debian's promtool, and checks that the
// Kubernetes Prometheus loads the same rules.
package prometheus

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
)

func run(t *testing.T, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
}

func TestConfigAndRulesAreValid(t *testing.T) {
	bin := testutils.PrometheusBinary(t, "promtool")
	// check config also checks the rule files it names.
	run(t, bin, "check", "config", "prometheus.yml")
	run(t, bin, "check", "rules", "rules.yml")
}

// kubeRules is the copy of rules.yml that deploy/kubernetes's
// configMapGenerator mounts beside its prometheus.yml.
const kubeRules = "../kubernetes/rules.yml"

func TestKubernetesRulesAreTheseRules(t *testing.T) {
	ours, err := os.ReadFile("rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := os.ReadFile(kubeRules)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, theirs) {
		t.Errorf("%s differs from rules.yml; copy it: cp deploy/prometheus/rules.yml deploy/kubernetes/rules.yml", kubeRules)
	}
}

func TestKubernetesConfigLoadsTheRules(t *testing.T) {
	bin := testutils.PrometheusBinary(t, "promtool")
	out, err := exec.Command(bin, "check", "config", "../kubernetes/prometheus.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("Checking "+kubeRules+"\n")) {
		t.Errorf("promtool checked no %s, so deploy/kubernetes/prometheus.yml does not load it:\n%s", kubeRules, out)
	}
}

func TestEveryAlertFiresAsItsUnitTestSays(t *testing.T) {
	run(t, testutils.PrometheusBinary(t, "promtool"), "test", "rules", "rules_test.yml")
}

func TestEveryAlertHasAUnitTest(t *testing.T) {
	rules, err := os.ReadFile("rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("rules_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*alertname: (\w+)$`).FindAllSubmatch(tests, -1) {
		tested[string(m[1])] = true
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\w+)$`).FindAllSubmatch(rules, -1)
	if len(alerts) == 0 {
		t.Fatal("rules.yml defines no alert")
	}
	for _, m := range alerts {
		if !tested[string(m[1])] {
			t.Errorf("alert %s has no test in rules_test.yml", m[1])
		}
	}
}
