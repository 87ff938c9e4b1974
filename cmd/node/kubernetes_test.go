package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/routeguide-cluster/routeguide/internal/flagenv"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// The Kubernetes manifests (deploy/kubernetes), in what a schema cannot
// check: the API server checks their shape (deploy/kubernetes/apicheck);
// these tests check that they agree with the node and the image build.

const kubeDir = "../../deploy/kubernetes"

// manifest is what these tests read of a Kubernetes object.
type manifest struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template podTemplate `yaml:"template"`
	} `yaml:"spec"`
}

type podTemplate struct {
	Spec struct {
		TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
		Containers                    []container `yaml:"containers"`
	} `yaml:"spec"`
}

type container struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	Env   []struct {
		Name      string         `yaml:"name"`
		Value     string         `yaml:"value"`
		ValueFrom map[string]any `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe probe `yaml:"readinessProbe"`
	LivenessProbe  probe `yaml:"livenessProbe"`
}

type probe struct {
	GRPC *struct {
		Port    int    `yaml:"port"`
		Service string `yaml:"service"`
	} `yaml:"grpc"`
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// kubeObjects reads every object of the kustomization's resources.
func kubeObjects(t *testing.T) []manifest {
	t.Helper()
	var k struct {
		Resources []string `yaml:"resources"`
	}
	readYAML(t, filepath.Join(kubeDir, "kustomization.yaml"), &k)
	var out []manifest
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(kubeDir, r))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var m manifest
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			out = append(out, m)
		}
	}
	return out
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// nodeContainer is the node Deployment's container.
func nodeContainer(t *testing.T) (container, podTemplate) {
	t.Helper()
	for _, m := range kubeObjects(t) {
		if m.Kind == "Deployment" && m.Metadata.Name == "node" {
			for _, c := range m.Spec.Template.Spec.Containers {
				if c.Name == "node" {
					return c, m.Spec.Template
				}
			}
		}
	}
	t.Fatal("deploy/kubernetes: no Deployment node with a container node")
	return container{}, podTemplate{}
}

// TestKubernetesNodeEnvIsNodeFlags: every ROUTEGUIDE_ variable the node's
// manifest sets is a node flag's, any other is used by one of those (as
// $(POD_IP) is), and the node accepts them all, as Kubernetes expands them.
func TestKubernetesNodeEnvIsNodeFlags(t *testing.T) {
	c, _ := nodeContainer(t)
	var usage bytes.Buffer
	parseConfig([]string{"-h"}, func(string) (string, bool) { return "", false }, &usage)
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(usage.String(), -1) {
		flags[flagenv.VarName(m[1])] = true
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "10.1.2.3" // the downward API's pod IP, say
			continue
		}
		v := e.Value
		for name, val := range env {
			v = strings.ReplaceAll(v, "$("+name+")", val)
		}
		env[e.Name] = v
	}
	for name := range env {
		if strings.HasPrefix(name, "ROUTEGUIDE_") {
			if !flags[name] {
				t.Errorf("the node's manifest sets %s, which is no node flag's variable", name)
			}
			continue
		}
		used := false
		for _, e := range c.Env {
			used = used || strings.Contains(e.Value, "$("+name+")")
		}
		if !used {
			t.Errorf("the node's manifest sets %s, which neither the node nor another variable reads", name)
		}
	}
	if _, _, err := parseConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard); err != nil {
		t.Errorf("the node refuses the manifest's environment: %v", err)
	}
}

// TestKubernetesNodePortsAndProbes: the ports and probes are the node's, and
// the grace period covers the drain and the graceful stop.
func TestKubernetesNodePortsAndProbes(t *testing.T) {
	c, tmpl := nodeContainer(t)
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = strings.ReplaceAll(e.Value, "$(POD_IP)", "10.1.2.3")
	}
	cfg, _, err := parseConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	port := func(addr string) int {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return n
	}
	if ports["grpc"] != port(cfg.Listen) {
		t.Errorf("port grpc is %d; the node listens on %s", ports["grpc"], cfg.Listen)
	}
	if ports["metrics"] != port(cfg.MetricsListen) {
		t.Errorf("port metrics is %d; the node serves metrics on %s", ports["metrics"], cfg.MetricsListen)
	}
	if port(cfg.Advertise) != port(cfg.Listen) {
		t.Errorf("the node advertises %s but listens on %s", cfg.Advertise, cfg.Listen)
	}
	if r := c.ReadinessProbe.GRPC; r == nil || r.Port != port(cfg.Listen) || r.Service != contract.HealthService {
		t.Errorf("readiness probe %+v; want gRPC health of %s on port %d", r, contract.HealthService, port(cfg.Listen))
	}
	if l := c.LivenessProbe.HTTPGet; l == nil || l.Path != "/healthz" || (l.Port != "metrics" && l.Port != port(cfg.MetricsListen)) {
		t.Errorf("liveness probe %+v; want GET /healthz on the metrics port", l)
	}
	// Revoking the lease takes at most 2s (see docs/DEPLOY.md, "Cluster with Docker").
	need := 2*time.Second + cfg.DrainDelay + cfg.ShutdownTimeout
	if grace := time.Duration(tmpl.Spec.TerminationGracePeriodSeconds) * time.Second; grace < need {
		t.Errorf("terminationGracePeriodSeconds %v; the drain and graceful stop may take %v", grace, need)
	}
}

// TestKubernetesImagesAreTheBuilds: every image is one deploy/build-images.sh
// builds, at its default tag.
func TestKubernetesImagesAreTheBuilds(t *testing.T) {
	script, err := os.ReadFile("../../deploy/build-images.sh")
	if err != nil {
		t.Fatal(err)
	}
	tag := regexp.MustCompile(`(?m)^TAG=\$\{ROUTEGUIDE_IMAGE_TAG:-(\S+)\}$`).FindSubmatch(script)
	if tag == nil {
		t.Fatal("build-images.sh: no TAG=${ROUTEGUIDE_IMAGE_TAG:-...} line")
	}
	built := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^build (\S+)`).FindAllSubmatch(script, -1) {
		built["routeguide/"+string(m[1])+":"+string(tag[1])] = true
	}
	seen := 0
	for _, m := range kubeObjects(t) {
		for _, c := range m.Spec.Template.Spec.Containers {
			seen++
			if !built[c.Image] {
				t.Errorf("%s %s, container %s: image %s is none that build-images.sh builds (%v)", m.Kind, m.Metadata.Name, c.Name, c.Image, built)
			}
		}
	}
	if seen < 4 {
		t.Errorf("%d containers in deploy/kubernetes; want etcd, node, prometheus and client at least", seen)
	}
}
