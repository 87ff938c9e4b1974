package apicheck

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The negative control of the cluster test: the node Deployment as the
// cluster runs it, copied under another name with one breakage that only a
// running cluster shows, a readiness probe on a port the node does not
// serve. The checks the steps rely on must report it unready.
const (
	controlName      = "node-wrong-probe"
	controlSelector  = "app.kubernetes.io/name=" + controlName
	controlProbePort = 50052 // the node serves gRPC on 50051 only
)

// wrongProbePortIsCaught applies the control beside the nodes and waits
// until its node serves and the kubelet has seen its probe fail three
// times; then readyPods and rolloutStatus, the checks of every other step,
// must both find it unready.
func wrongProbePortIsCaught(t *testing.T, k kube, _ *clientv3.Client) {
	k.apply(controlDeployment(t, k.must("get", "deployment/node", "-o", "json")))
	var pod, ip, probe string
	eventually(t, 90*time.Second, "the control's node runs and its readiness probe has failed 3 times", func() error {
		out := k.get("pods", `{range .items[*]}{.metadata.name} {.status.podIP} {.status.containerStatuses[0].started}{"\n"}{end}`, "-l", controlSelector)
		f := strings.Fields(out)
		if len(f) != 3 || f[2] != "true" {
			return fmt.Errorf("the control's pods (name, IP, started): %q", out)
		}
		pod, ip = f[0], f[1]
		n, message := k.failedReadinessProbes(pod)
		if n < 3 {
			return fmt.Errorf("pod %s: %d failed readiness probes", pod, n)
		}
		probe = fmt.Sprintf("%d times: %s", n, message)
		return nil
	})
	// Only the probe is wrong: the node in the pod serves, as the nodes do.
	if st, err := health(ip+":50051", "routeguide.RouteGuide"); err != nil || st != "SERVING" {
		t.Errorf("the control's pod %s: health is %s, %v; want SERVING", pod, st, err)
	}
	if ready := k.readyPods(controlSelector); len(ready) != 0 {
		t.Errorf("readyPods counts the control's pods, whose probe is on a wrong port, as Ready: %v", ready)
	}
	out, err := k.rolloutStatus("deployment/"+controlName, 2*time.Second)
	if err == nil {
		t.Errorf("rollout status passes the control, whose probe is on a wrong port:\n%s", out)
	}
	t.Logf("the control, probed on port %d: its probe failed %s; pod %s not Ready; rollout status: %v: %s",
		controlProbePort, probe, pod, err, strings.TrimSpace(out))
	k.must("delete", "deployment/"+controlName, "--wait=true", "--timeout=60s")
}

// failedReadinessProbes counts the kubelet's events of failed readiness
// probes of pod, and returns the last one's message.
func (k kube) failedReadinessProbes(pod string) (n int, last string) {
	k.t.Helper()
	out := k.must("get", "events", "--field-selector=reason=Unhealthy,involvedObject.name="+pod,
		"-o", `jsonpath={range .items[*]}{.count}{"\t"}{.message}{"\n"}{end}`)
	for _, line := range strings.Split(out, "\n") {
		count, message, _ := strings.Cut(line, "\t")
		if !strings.HasPrefix(message, "Readiness probe failed") {
			continue
		}
		c, err := strconv.Atoi(count)
		if err != nil || c < 1 {
			c = 1 // an event not aggregated has no count
		}
		n += c
		last = message
	}
	return n, last
}

// controlDeployment turns the node Deployment, as kubectl shows it, into
// the control: its own name and labels (outside the nodes' Service, budget
// and autoscaler), one replica, registered under its own service name (so
// no client and no step finds it), and the probe on controlProbePort.
func controlDeployment(t *testing.T, live string) string {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal([]byte(live), &d); err != nil {
		t.Fatal(err)
	}
	delete(d, "status")
	d["metadata"] = map[string]any{"name": controlName, "namespace": namespace}
	labels := map[string]any{"app.kubernetes.io/name": controlName}
	spec := object(t, d, "spec")
	spec["replicas"] = 1
	spec["selector"] = map[string]any{"matchLabels": labels}
	template := object(t, spec, "template")
	template["metadata"] = map[string]any{"labels": labels}
	containers, ok := object(t, template, "spec")["containers"].([]any)
	if !ok || len(containers) != 1 {
		t.Fatalf("the node Deployment has containers %v; want one", containers)
	}
	c, _ := containers[0].(map[string]any)
	object(t, object(t, c, "readinessProbe"), "grpc")["port"] = controlProbePort
	env, _ := c["env"].([]any)
	c["env"] = append(env, map[string]any{"name": "ROUTEGUIDE_SERVICE", "value": controlName})
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// object is the JSON object under key in m.
func object(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	o, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("no object %q in the node Deployment (keys of its parent: %v)", key, keys(m))
	}
	return o
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
