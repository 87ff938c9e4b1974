package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// maxREADMELines is the README's length: what it is, the two set-up
// commands, the client, Go and other languages, where to read on and the
// layout; the manual lives in docs/.
const maxREADMELines = 250

// repoRoot is the repository's root, seen from this package.
const repoRoot = "../.."

// docFiles are the project's Markdown documents: README.md and docs/*.md.
func docFiles(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md under %s: %v", repoRoot, err)
	}
	return append([]string{filepath.Join(repoRoot, "README.md")}, docs...)
}

func TestREADMEIsAtMost250Lines(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n > maxREADMELines {
		t.Errorf("README.md has %d lines; keep it at most %d and move the rest into docs/", n, maxREADMELines)
	}
}

func TestDocsRelativeLinksReachAFileAndHeading(t *testing.T) {
	for _, file := range docFiles(t) {
		for _, problem := range brokenLinks(t, file) {
			t.Errorf("%s: %s", file, problem)
		}
	}
}

// TestBrokenLinksFindsAMissingFileAndAMissingHeading guards the checker
// itself: a link to no file and one to no heading are both reported, and
// good links are not.
func TestBrokenLinksFindsAMissingFileAndAMissingHeading(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("other.md", "# Other\n\n## Why not etcd's resolver, as it is?\n")
	doc := write("doc.md", "# Doc\n\n## Here `it` is\n\n"+
		"[ok](other.md) [ok](other.md#why-not-etcds-resolver-as-it-is) [ok](#here-it-is) [ok](https://example.com/x)\n"+
		"[gone](missing.md) [gone](other.md#no-such-heading) [gone](#nowhere)\n"+
		"```\n[in code](missing-too.md)\n```\n")
	got := brokenLinks(t, doc)
	want := []string{"missing.md", "other.md#no-such-heading", "#nowhere"}
	if len(got) != len(want) {
		t.Fatalf("brokenLinks = %q; want one problem for each of %q", got, want)
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("problem %d = %q; want it to name %q", i, got[i], w)
		}
	}
}

func TestHeadingSlugsAreGitHubs(t *testing.T) {
	for heading, want := range map[string]string{
		"Discovery: why not etcd's resolver as it is":       "discovery-why-not-etcds-resolver-as-it-is",
		"xDS: an xds:/// client against an etcd:/// client": "xds-an-xds-client-against-an-etcd-client",
		"Bounds: what one client can make a node hold":      "bounds-what-one-client-can-make-a-node-hold",
		"etcd over TLS, with a user":                        "etcd-over-tls-with-a-user",
		"The `client` command":                              "the-client-command",
	} {
		if got := slug(heading); got != want {
			t.Errorf("slug(%q) = %q; want %q", heading, got, want)
		}
	}
}

// markdownLink is a link's target: ](path), ](path#anchor) or ](#anchor).
var markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// brokenLinks lists the relative links in a Markdown file, outside code,
// whose file does not exist or, for a Markdown file, has no heading that
// the anchor names.
func brokenLinks(t *testing.T, file string) []string {
	t.Helper()
	text := prose(t, file)
	var problems []string
	for _, m := range markdownLink.FindAllStringSubmatch(text, -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		path, anchor, _ := strings.Cut(target, "#")
		linked := file
		if path != "" {
			linked = filepath.Join(filepath.Dir(file), path)
			if _, err := os.Stat(linked); err != nil {
				problems = append(problems, fmt.Sprintf("link %s: no such file", target))
				continue
			}
		}
		if anchor == "" || !strings.HasSuffix(linked, ".md") {
			continue
		}
		if !headingSlugs(t, linked)[anchor] {
			problems = append(problems, fmt.Sprintf("link %s: %s has no heading with that anchor", target, linked))
		}
	}
	return problems
}

// prose is a Markdown file without its fenced code blocks and inline code.
func prose(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inlineCode := regexp.MustCompile("`[^`]*`")
	var b strings.Builder
	fenced := false
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			b.WriteString(inlineCode.ReplaceAllString(line, "") + "\n")
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// headingSlugs are the anchors GitHub gives a Markdown file's headings.
func headingSlugs(t *testing.T, file string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	slugs := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		heading := strings.TrimLeft(line, "#")
		if fenced || heading == line || len(line)-len(heading) > 6 || !strings.HasPrefix(heading, " ") {
			continue
		}
		s := slug(heading)
		if n := seen[s]; n > 0 {
			slugs[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			slugs[s] = true
		}
		seen[s]++
	}
	return slugs
}

// slug is GitHub's anchor for a heading: lower case, punctuation dropped
// (hyphens and underscores kept), spaces turned into hyphens.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}
