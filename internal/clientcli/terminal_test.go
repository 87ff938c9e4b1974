//go:build linux

package clientcli

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

func TestChatAtATerminalSaysWhatToType(t *testing.T) {
	addr := nodetest.Start(t, "n1").Addr().String()
	terminal, controller := testutils.OpenPTY(t)
	// A person types a note, then Ctrl-D, which the terminal turns into
	// the end of the input.
	if _, err := io.WriteString(controller, "40.7484405 -73.9856644 hello\n\x04"); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := Main(t.Context(), args(addr, "chat"), IO{Stdin: terminal, Stdout: &stdout, Stderr: &stderr}, nil)
	if code != ExitOK || stderr.String() != chatPrompt+"\n" {
		t.Errorf("exit %d, stderr %q; want 0 and the prompt %q", code, stderr.String(), chatPrompt)
	}
	if !strings.Contains(stdout.String(), "hello") {
		t.Errorf("stdout %q; want the note back", stdout.String())
	}

	out := run(t, invocation{args: args(addr, "chat"), stdin: "40.7484405 -73.9856644 piped\n"})
	if out.code != ExitOK || out.stderr != "" {
		t.Errorf("from a pipe: exit %d, stderr %q; want 0 and no prompt", out.code, out.stderr)
	}
}
