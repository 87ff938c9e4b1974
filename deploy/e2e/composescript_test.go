package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestComposeScriptRunsWhicheverComposeIsInstalled runs deploy/compose on a
// PATH that holds only stand-ins for docker and docker-compose, which print
// how they were called: Compose v2 where the plugin answers, Debian's 1.29
// where only docker-compose is there, and one clear line where neither is.
func TestComposeScriptRunsWhicheverComposeIsInstalled(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script, err := filepath.Abs("../compose")
	if err != nil {
		t.Fatal(err)
	}
	// docker answers `compose version` only with the plugin; both print
	// their arguments otherwise.
	const docker = `#!/bin/sh
if [ "$1" = compose ] && [ -z "$PLUGIN" ]; then echo "unknown shorthand flag: 'f'" >&2; exit 1; fi
echo "docker $*"
`
	const dockerCompose = "#!/bin/sh\necho \"docker-compose $*\"\n"
	tests := []struct {
		name     string
		plugin   bool
		v1       bool
		env      string
		want     string
		wantCode int
	}{
		{"v2 plugin", true, true, "", "docker compose -f f.yml up -d\n", 0},
		{"docker-compose 1.29 only", false, true, "", "docker-compose -f f.yml up -d\n", 0},
		{"ROUTEGUIDE_COMPOSE chooses", true, true, "docker-compose", "docker-compose -f f.yml up -d\n", 0},
		{"neither", false, false, "", "deploy/compose: neither `docker compose` (the Compose plugin) nor docker-compose is installed\n", 127},
		{"ROUTEGUIDE_COMPOSE naming the script", true, true, "bash " + script, "deploy/compose: ROUTEGUIDE_COMPOSE runs deploy/compose again; name docker compose or docker-compose\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := t.TempDir()
			write := func(name, text string) {
				if err := os.WriteFile(filepath.Join(bin, name), []byte(text), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(bash, filepath.Join(bin, "bash")); err != nil {
				t.Fatal(err)
			}
			write("docker", docker)
			if tt.v1 {
				write("docker-compose", dockerCompose)
			}
			cmd := exec.Command(bash, script, "-f", "f.yml", "up", "-d")
			cmd.Env = []string{"PATH=" + bin, "ROUTEGUIDE_COMPOSE=" + tt.env}
			if tt.plugin {
				cmd.Env = append(cmd.Env, "PLUGIN=1")
			}
			out, _ := cmd.CombinedOutput()
			if string(out) != tt.want || cmd.ProcessState.ExitCode() != tt.wantCode {
				t.Errorf("deploy/compose: exit %d, output %q; want %d, %q", cmd.ProcessState.ExitCode(), out, tt.wantCode, tt.want)
			}
		})
	}
}

// bareCompose is a Compose command written for one Compose only.
var bareCompose = regexp.MustCompile("(?m)^(?:[^`]*`)?(?:docker compose|docker-compose) (?:-f|-p|run|up|exec|down|ps|logs)")

// TestDocumentedComposeCommandsWorkWithEitherCompose: every Compose command
// the README, docs/ and the compose files show runs through deploy/compose.
func TestDocumentedComposeCommandsWorkWithEitherCompose(t *testing.T) {
	files := []string{"../README.md", "docker-compose.yml", "docker-compose.tls.yml", "tls/up.sh", "build-images.sh"}
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	for _, doc := range docs {
		files = append(files, filepath.Join("../docs", filepath.Base(doc)))
	}
	for _, file := range files {
		data, err := os.ReadFile(filepath.Join("..", file)) // from deploy/
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range bareCompose.FindAllString(string(data), -1) {
			t.Errorf("%s: %q works with one Compose only; run it through bash deploy/compose", file, m)
		}
	}
}
