package test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestStatefulSetArgsFormAClusterByDNSNameUnderPodman runs the stated
// sidecar of deploy/kubernetes/statefulset.yaml as Kubernetes would, three
// times: its image and its arguments, with $(POD_NAME) and
// $(POD_NAMESPACE) expanded, in three containers on a podman network whose
// DNS (aardvark) answers each pod's name under the headless Service,
// POD.userstore-peers.NAMESPACE.svc.cluster.local. No Kubernetes cluster
// is needed: it checks what the manifest's flags do.
//
//   - All three start at once (podManagementPolicy: Parallel); they form
//     one cluster of three voters, each advertising its DNS name.
//   - userstore-1 comes back in a new container (and so a new IP) on its
//     volume: it rejoins by its name and catches up.
//   - userstore-0, the bootstrap node, loses its volume: it joins the
//     running cluster instead of bootstrapping a new one, and gets every
//     acknowledged write.
func TestStatefulSetArgsFormAClusterByDNSNameUnderPodman(t *testing.T) {
	t.Parallel()
	skipLong(t) // the processes it checks run in containers, not under -race
	podmanImages(t)
	if out := runBounded(time.Minute, "", "podman", "info", "--format", "{{.Host.NetworkBackend}}"); strings.TrimSpace(out.out) != "netavark" {
		t.Skipf("podman's network backend is %q, not netavark: its networks may have no DNS for the pods' names (.ci/run installs netavark and aardvark-dns)", strings.TrimSpace(out.out))
	}
	sts, container := statefulSetStated(t)
	prefix := "stated-test-" + strconv.Itoa(os.Getpid())
	c := &podCluster{sts: sts, container: container, prefix: prefix, network: prefix + "-net", namespace: prefix}
	if out := runBounded(time.Minute, "", "podman", "network", "create", c.network); out.err != nil {
		t.Fatalf("podman network create: %v\n%s", out.err, out.out)
	}
	t.Cleanup(func() { c.teardown(t) })

	replicas := int(*sts.Spec.Replicas)
	started := time.Now()
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Add(1)
		go func() { defer wg.Done(); c.start(t, i) }()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	clusterID := c.waitMembers(t, 0, replicas)
	t.Logf("%s: cluster %s of %d voters formed", time.Since(started).Round(time.Second), clusterID, replicas)

	keys := c.write(t, 1, "a", 20)
	c.remove(t, 1, false)
	c.start(t, 1)
	if id := c.waitMembers(t, 1, replicas); id != clusterID {
		t.Fatalf("userstore-1 came back in cluster %s, want %s", id, clusterID)
	}
	c.waitKeys(t, 1, keys)
	t.Logf("%s: userstore-1 is back in a new container with every write", time.Since(started).Round(time.Second))

	keys = append(keys, c.write(t, 2, "b", 20)...)
	c.remove(t, 0, true) // the bootstrap node's disk is lost
	c.start(t, 0)
	if id := c.waitMembers(t, 0, replicas); id != clusterID {
		t.Fatalf("userstore-0 came back without its disk in cluster %s, want %s: it bootstrapped a new cluster instead of joining", id, clusterID)
	}
	c.waitKeys(t, 0, keys)
	t.Logf("%s: userstore-0 joined again after losing its disk, with every write", time.Since(started).Round(time.Second))
	t.Logf("cluster %s of %d formed by DNS name; a new container and a lost disk came back with all %d writes", clusterID, replicas, len(keys))
}

// statefulSetStated reads the StatefulSet and its stated container from
// deploy/kubernetes/statefulset.yaml.
func statefulSetStated(t *testing.T) (*appsv1.StatefulSet, *corev1.Container) {
	t.Helper()
	raw, err := os.ReadFile("../deploy/kubernetes/statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq(string(raw), "\n---\n") {
		if !strings.Contains(doc, "\nkind: StatefulSet\n") {
			continue
		}
		var sts appsv1.StatefulSet
		if err := yaml.UnmarshalStrict([]byte(doc), &sts); err != nil {
			t.Fatalf("statefulset.yaml: %v", err)
		}
		for i, ct := range sts.Spec.Template.Spec.Containers {
			if ct.Name == "stated" {
				return &sts, &sts.Spec.Template.Spec.Containers[i]
			}
		}
	}
	t.Fatal("statefulset.yaml: no StatefulSet with a container named stated")
	return nil, nil
}

// podCluster runs a StatefulSet's stated container as podman containers.
type podCluster struct {
	sts                        *appsv1.StatefulSet
	container                  *corev1.Container
	prefix, network, namespace string
}

func (c *podCluster) pod(i int) string        { return fmt.Sprintf("%s-%d", c.sts.Name, i) }
func (c *podCluster) name(i int) string       { return c.prefix + "-" + c.pod(i) }
func (c *podCluster) volume(i int) string     { return c.prefix + "-data-" + c.pod(i) }
func (c *podCluster) sockVolume(i int) string { return c.prefix + "-sock-" + c.pod(i) }

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// start runs pod i's stated container as the kubelet would: the
// downward API's POD_NAME and POD_NAMESPACE in its env and expanded in its
// arguments, the data volume at its mount path, and the pod's DNS name as
// its network alias. Checkpoints go to a file bucket on the data volume
// instead of S3.
func (c *podCluster) start(t *testing.T, i int) {
	t.Helper()
	env := map[string]string{"POD_NAME": c.pod(i), "POD_NAMESPACE": c.namespace}
	args := []string{"run", "--detach", "--name", c.name(i), "--network", c.network,
		"--network-alias", fmt.Sprintf("%s.%s.%s.svc.cluster.local", c.pod(i), c.sts.Spec.ServiceName, c.namespace),
		"--env", "POD_NAME=" + env["POD_NAME"], "--env", "POD_NAMESPACE=" + env["POD_NAMESPACE"],
		"--env", "STATED_CHECKPOINT_URL=file:///var/lib/stated/checkpoints"}
	for _, m := range c.container.VolumeMounts {
		switch m.Name {
		case "data":
			args = append(args, "--volume", c.volume(i)+":"+m.MountPath)
		case "sock":
			args = append(args, "--volume", c.sockVolume(i)+":"+m.MountPath)
		}
	}
	args = append(args, c.container.Image)
	for _, a := range c.container.Args {
		args = append(args, envRef.ReplaceAllStringFunc(a, func(ref string) string {
			if v, ok := env[envRef.FindStringSubmatch(ref)[1]]; ok {
				return v
			}
			return ref
		}))
	}
	if out := runBounded(time.Minute, "", "podman", args...); out.err != nil {
		t.Errorf("podman run %s: %v\n%s", c.name(i), out.err, out.out)
	}
}

// remove removes pod i's container, and with lostDisk its data volume.
func (c *podCluster) remove(t *testing.T, i int, lostDisk bool) {
	t.Helper()
	if out := runBounded(time.Minute, "", "podman", "rm", "--force", "--time", "0", c.name(i)); out.err != nil {
		t.Fatalf("podman rm %s: %v\n%s", c.name(i), out.err, out.out)
	}
	if lostDisk {
		if out := runBounded(time.Minute, "", "podman", "volume", "rm", c.volume(i)); out.err != nil {
			t.Fatalf("podman volume rm %s: %v\n%s", c.volume(i), out.err, out.out)
		}
	}
}

func (c *podCluster) exec(i int, args ...string) podCmdResult {
	return runBounded(90*time.Second, "", "podman", append([]string{"exec", c.name(i), "/stated"}, args...)...)
}

// waitMembers waits until pod i's node lists the replicas pods as voters,
// each at its DNS name under the headless Service, and returns the
// cluster id.
func (c *podCluster) waitMembers(t *testing.T, i, replicas int) string {
	t.Helper()
	var want []string
	for j := range replicas {
		want = append(want, fmt.Sprintf("%s %s.%s.%s.svc.cluster.local:7421", c.pod(j), c.pod(j), c.sts.Spec.ServiceName, c.namespace))
	}
	var id string
	podWaitFor(t, 90*time.Second, fmt.Sprintf("%s to list the members %v", c.pod(i), want), func() bool {
		out := c.exec(i, "cluster", "members", "--json")
		var m struct {
			ClusterID string `json:"cluster_id"`
			LeaderID  string `json:"leader_id"`
			Members   []struct {
				NodeID   string `json:"node_id"`
				RaftAddr string `json:"raft_addr"`
				Voter    bool   `json:"voter"`
			}
		}
		if out.err != nil || json.Unmarshal([]byte(out.out), &m) != nil || m.LeaderID == "" || m.ClusterID == "" {
			return false
		}
		var got []string
		for _, mb := range m.Members {
			if mb.Voter {
				got = append(got, mb.NodeID+" "+mb.RaftAddr)
			}
		}
		slices.Sort(got)
		id = m.ClusterID
		return slices.Equal(got, want)
	})
	return id
}

// podExecs is how many podman execs write and waitKeys run at once: each
// is a process in the container (about half a second here), and one at a
// time the test's 40 keys took most of its minute and a half.
const podExecs = 4

// eachKey runs fn for every key, podExecs at a time, and stops t when any
// failed (fn reports with t.Errorf).
func eachKey(t *testing.T, keys []string, fn func(key string)) {
	t.Helper()
	sem := make(chan struct{}, podExecs)
	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(key)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// write puts n keys through pod i's node and returns them.
func (c *podCluster) write(t *testing.T, i int, tag string, n int) []string {
	t.Helper()
	var keys []string
	for k := range n {
		keys = append(keys, fmt.Sprintf("%s%d", tag, k))
	}
	eachKey(t, keys, func(key string) {
		// A node that forwards to a leader which came back in a new
		// container may wait for its gRPC channel to resolve the name
		// again (grpc-go re-resolves DNS at most every 30 s); the write
		// waits for that, and slow writes are logged.
		started := time.Now()
		if out := c.exec(i, "kv", "put", "podtest", key, "v-"+key, "--timeout", "60s"); out.err != nil {
			t.Errorf("kv put %s through %s: %v\n%s", key, c.pod(i), out.err, out.out)
			return
		}
		if d := time.Since(started); d > 2*time.Second {
			t.Logf("kv put %s through %s took %s", key, c.pod(i), d.Round(time.Millisecond))
		}
	})
	return keys
}

// waitKeys waits until pod i's own state (a local read) holds every key.
func (c *podCluster) waitKeys(t *testing.T, i int, keys []string) {
	t.Helper()
	eachKey(t, keys, func(key string) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			out := c.exec(i, "kv", "get", "podtest", key, "--consistency", "local")
			if out.err == nil && strings.TrimSpace(out.out) == "v-"+key {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("waited 60s for %s to hold %s: %v %s", c.pod(i), key, out.err, out.out)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// teardown removes the containers, their volumes and the network; it logs
// the nodes' output first when the test failed.
func (c *podCluster) teardown(t *testing.T) {
	replicas := int(*c.sts.Spec.Replicas)
	for i := range replicas {
		if t.Failed() {
			logs := runBounded(time.Minute, "", "podman", "logs", "--tail", "80", c.name(i))
			t.Logf("podman logs %s:\n%s", c.name(i), logs.out)
		}
		runBounded(time.Minute, "", "podman", "rm", "--force", "--time", "0", c.name(i))
		runBounded(time.Minute, "", "podman", "volume", "rm", "--force", c.volume(i), c.sockVolume(i))
	}
	runBounded(time.Minute, "", "podman", "network", "rm", "--force", c.network)
}
