package apicheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// manifests is deploy/kubernetes, the kustomization under check.
const manifests = ".."

// A change that breaks the manifests, and what the API server must say.
type breakage struct {
	name      string
	file      string // in deploy/kubernetes
	old, new  string // old must occur once in file
	rejected  string // the object refused, as kubectl names it
	wantError string // in kubectl's output
	alsoError string // too, if set
}

var breakages = []breakage{
	{
		name: "a misspelled field in the node Deployment",
		file: "node.yaml",
		old:  "terminationGracePeriodSeconds: 15", new: "terminationGracePeriodSecond: 15",
		rejected:  "deployment.apps/node",
		wantError: `Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.template.spec.terminationGracePeriodSecond"`,
	},
	{
		name: "an unknown field in the node container",
		file: "node.yaml",
		old:  "imagePullPolicy: IfNotPresent", new: "imagePullPolicy: IfNotPresent\n          restartOnFailure: true",
		rejected:  "deployment.apps/node",
		wantError: `Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.template.spec.containers[0].restartOnFailure"`,
	},
	{
		name: "a Deployment selector that does not match its template",
		file: "node.yaml",
		old:  "labels: {app.kubernetes.io/name: routeguide-node}", new: "labels: {app.kubernetes.io/name: routeguide}",
		rejected:  "deployment.apps/node",
		wantError: "The Deployment \"node\" is invalid: spec.template.metadata.labels: Invalid value: {\"app.kubernetes.io/name\":\"routeguide\"}: `selector` does not match template `labels`",
	},
	{
		name: "an HPA with maxReplicas below minReplicas",
		file: "node.yaml",
		old:  "maxReplicas: 10", new: "maxReplicas: 2",
		rejected:  "horizontalpodautoscaler.autoscaling/node",
		wantError: "The HorizontalPodAutoscaler \"node\" is invalid: spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
	},
	{
		name: "a PodDisruptionBudget with both minAvailable and maxUnavailable",
		file: "etcd.yaml",
		old:  "minAvailable: 2", new: "minAvailable: 2\n  maxUnavailable: 1",
		rejected:  "poddisruptionbudget.policy/etcd",
		wantError: `The PodDisruptionBudget "etcd" is invalid: spec: Invalid value: `, // the spec, in Go's words
		alsoError: "minAvailable and maxUnavailable cannot be both set",
	},
	{
		name: "a Job whose pod restarts always",
		file: "client-job.yaml",
		old:  "restartPolicy: Never", new: "restartPolicy: Always",
		rejected:  "job.batch/client",
		wantError: `The Job "client" is invalid: spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"`,
	},
	{
		name: "a probe on a port that is a name too long to be one",
		file: "prometheus.yaml",
		old:  "httpGet: {path: /-/ready, port: web}", new: "httpGet: {path: /-/ready, port: prometheus-web-ui}",
		rejected:  "deployment.apps/prometheus",
		wantError: `The Deployment "prometheus" is invalid: spec.template.spec.containers[0].readinessProbe.httpGet.port: Invalid value: "prometheus-web-ui": must be no more than 15 characters`,
	},
}

// TestServerSideDryRun runs `kubectl apply -k --dry-run=server
// --validate=strict` against a real kube-apiserver: deploy/kubernetes must
// pass, and each breakage must fail with the API server's word for it, which
// shows that the check took place.
func TestServerSideDryRun(t *testing.T) {
	bins := buildTools(t)
	dir := t.TempDir()
	etcdURL := startEtcd(t, bins.etcd, dir)
	// Addresses for Services, never dialled.
	api := startAPIServer(t, bins.apiserver, dir, etcdURL, "10.0.0.0/16")

	// A dry run of a namespaced object needs its namespace to exist.
	kust, err := os.ReadFile(filepath.Join(manifests, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ns := regexp.MustCompile(`(?m)^namespace: (\S+)$`).FindSubmatch(kust)
	if ns == nil {
		t.Fatal("deploy/kubernetes/kustomization.yaml sets no namespace")
	}
	if out, err := api.kubectl(bins.kubectl, "create", "namespace", string(ns[1])); err != nil {
		t.Fatalf("kubectl create namespace %s: %v\n%s", ns[1], err, out)
	}

	rendered, err := api.kubectl(bins.kubectl, "kustomize", manifests)
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, rendered)
	}
	objects := len(regexp.MustCompile(`(?m)^kind: `).FindAllString(rendered, -1))
	if objects < 10 {
		t.Fatalf("kustomize renders %d objects; want 10 at least:\n%s", objects, rendered)
	}

	t.Run("deploy/kubernetes passes", func(t *testing.T) {
		out, err := dryRun(api, bins.kubectl, manifests)
		if err != nil {
			t.Fatalf("the server-side dry run fails: %v\n%s", err, out)
		}
		if n := strings.Count(out, acceptedSuffix); n != objects {
			t.Errorf("the dry run accepted %d objects of the %d kustomize renders:\n%s", n, objects, out)
		}
		t.Logf("%d objects pass:\n%s", objects, out)
	})

	for _, b := range breakages {
		t.Run(b.name+" fails", func(t *testing.T) {
			broken := copyManifests(t)
			path := filepath.Join(broken, b.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(data), b.old); n != 1 {
				t.Fatalf("%s holds %q %d times; the breakage needs it once", b.file, b.old, n)
			}
			if err := os.WriteFile(path, []byte(strings.Replace(string(data), b.old, b.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := dryRun(api, bins.kubectl, broken)
			if err == nil {
				t.Fatalf("the dry run passes with %s:\n%s", b.name, out)
			}
			// The API server refused that object, for that reason, and
			// accepted every other.
			if !strings.Contains(out, b.wantError) || !strings.Contains(out, b.alsoError) {
				t.Fatalf("the dry run fails, but without %q and %q:\n%s", b.wantError, b.alsoError, out)
			}
			if strings.Contains(out, b.rejected+" created"+acceptedSuffix) {
				t.Errorf("the dry run accepted %s:\n%s", b.rejected, out)
			}
			if n := strings.Count(out, acceptedSuffix); n != objects-1 {
				t.Errorf("the dry run accepted %d objects; want all %d others than %s:\n%s", n, objects-1, b.rejected, out)
			}
			for _, line := range strings.SplitAfter(out, "\n") {
				if line != "" && !strings.HasSuffix(line, acceptedSuffix) {
					t.Logf("refused: %s", line)
				}
			}
		})
	}
}

// acceptedSuffix ends each line of kubectl's output for an object that
// passed.
const acceptedSuffix = " (server dry run)\n"

// dryRun applies the kustomization in dir, as a server-side dry run with
// unknown and duplicate fields as errors.
func dryRun(api apiServer, kubectl, dir string) (string, error) {
	return api.kubectl(kubectl, "apply", "-k", dir, "--dry-run=server", "--validate=strict")
}

// copyManifests copies the files of deploy/kubernetes (not this module) to
// a new directory and returns it.
func copyManifests(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(manifests)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(manifests, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
