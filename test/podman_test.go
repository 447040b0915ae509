package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSinglePodManifestKeepsEveryAcknowledgedWriteWhenStatedIsKilled runs
// deploy/kubernetes/single-pod.yaml for real: it builds the images with
// deploy/build-images.sh, plays the pod with `podman kube play`, writes
// through examples/userstore over HTTP, SIGKILLs the stated sidecar twice
// (once its process, as a crash or the OOM killer would, once with
// `podman kill --signal KILL`), and checks that stated comes back and
// every acknowledged write reads back through the app, also from a new pod
// on the same volume. Then it tears the pod and its volume down.
//
// It skips, saying why, when podman is not installed or cannot run a
// container; .ci/run installs and configures it.
func TestSinglePodManifestKeepsEveryAcknowledgedWriteWhenStatedIsKilled(t *testing.T) {
	t.Parallel()
	skipLong(t) // the processes it checks run in containers, not under -race
	started := time.Now()
	podmanImages(t)

	p := playSinglePod(t)
	p.waitReady(t, 90*time.Second)

	if uid := p.containerUID(t, p.stated); uid != "65532" {
		t.Errorf("the stated container runs as uid %s, want 65532", uid)
	}
	for _, c := range []string{p.stated, p.name + "-userstore"} {
		if ro := p.inspect(t, c, "{{.HostConfig.ReadonlyRootfs}}"); ro != "true" {
			t.Errorf("container %s: read-only root filesystem %s, want true (readOnlyRootFilesystem)", c, ro)
		}
	}

	// Writes while stated is up: every one must be acknowledged.
	w := &podWriter{base: p.base, acked: map[string]string{}, addsAcked: map[string]int{}, addsTried: map[string]int{}}
	for i := range 100 {
		if !w.put(t, i) || !w.add(t, i) {
			t.Fatalf("write %d through the app was not acknowledged with stated up", i)
		}
	}

	// A crash: SIGKILL to stated's process, while a writer keeps going.
	// The restart policy (Always) brings the container back by itself.
	stop := w.background(t, 100)
	before := p.restarts(t, p.stated)
	pid := p.pid(t, p.stated)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL stated (pid %d): %v", pid, err)
	}
	podWaitFor(t, 60*time.Second, "podman to restart the stated container after its process was SIGKILLed", func() bool {
		return p.restarts(t, p.stated) > before && p.running(t, p.stated)
	})
	p.waitReady(t, 60*time.Second)
	w.waitAcked(t, 20) // acknowledged writes after the restart, too

	// The same through podman: `podman kill` marks the container as
	// stopped by the user, and podman 4.3 does not restart it by itself
	// (Kubernetes would); the test says which it saw and starts it.
	if out := runBounded(time.Minute, "", "podman", "kill", "--signal", "KILL", p.stated); out.err != nil {
		t.Fatalf("podman kill: %v\n%s", out.err, out.out)
	}
	if podComesBack(t, p, 5*time.Second) {
		t.Log("podman restarted the stated container after podman kill --signal KILL")
	} else {
		t.Log("podman did not restart the container after podman kill --signal KILL (podman treats it as stopped by the user); starting it with podman start")
		if out := runBounded(time.Minute, "", "podman", "start", p.stated); out.err != nil {
			t.Fatalf("podman start: %v\n%s", out.err, out.out)
		}
	}
	p.waitReady(t, 60*time.Second)
	w.waitAcked(t, 20)
	stop()

	w.verify(t)
	t.Logf("%d fields and %d counter adds acknowledged, all read back; %d writes failed while stated was down",
		len(w.acked), w.addsAckedTotal(), w.failed)

	// The data lives on the claim's named volume: a new pod played from
	// the same manifest reads it all.
	p.removePod(t)
	p.play(t)
	p.waitReady(t, 90*time.Second)
	w.verify(t)

	p.down(t)
	if out := runBounded(time.Minute, "", "podman", "pod", "exists", p.name); out.err == nil {
		t.Errorf("pod %s still exists after podman kube down", p.name)
	}
	if out := runBounded(time.Minute, "", "podman", "volume", "exists", p.volume); out.err == nil {
		t.Errorf("volume %s still exists after podman volume rm", p.volume)
	}
	t.Logf("the whole test took %s", time.Since(started).Round(time.Second))
}

var (
	podmanOnce  sync.Once
	podmanSkip  string // why the podman tests skip; "" when they run
	podmanError error  // the images did not build
)

// podmanImages skips t, saying why, when podman is not installed or
// cannot run a container, and otherwise builds the images once (bash
// deploy/build-images.sh) for the package's podman tests, which then
// run at once (their pods, volumes and networks have names of their
// own).
func podmanImages(t *testing.T) {
	t.Helper()
	podmanOnce.Do(func() {
		if _, err := exec.LookPath("podman"); err != nil {
			podmanSkip = "podman is not installed: the manifests are not run under podman (.ci/run installs podman and runc; see deploy/README.md)"
			return
		}
		started := time.Now()
		build := runBounded(10*time.Minute, "..", "bash", "deploy/build-images.sh")
		if build.err != nil {
			podmanError = fmt.Errorf("bash deploy/build-images.sh: %v\n%s", build.err, build.out)
			return
		}
		t.Logf("images built in %s:\n%s", time.Since(started).Round(time.Second), build.out)
		if probe := runBounded(time.Minute, "", "podman", "run", "--rm", "--network=none", "localhost/stated:dev", "--help"); probe.err != nil {
			podmanSkip = fmt.Sprintf("podman cannot run a container here, so the manifests are not run under podman: %v\n%s(see deploy/README.md for the containers.conf that podman needs on these machines)", probe.err, probe.out)
		}
	})
	if podmanSkip != "" {
		t.Skip(podmanSkip)
	}
	if podmanError != nil {
		t.Fatal(podmanError)
	}
}

type podCmdResult struct {
	out string
	err error
}

// runBounded runs a command (podman, or the build script) in dir, bounded by
// timeout, and returns its combined output.
func runBounded(timeout time.Duration, dir string, name string, args ...string) podCmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: still running after %s: %w", name, strings.Join(args, " "), timeout, err)
	}
	return podCmdResult{string(out), err}
}

// singlePod is one play of deploy/kubernetes/single-pod.yaml under names
// of its own, so it meets neither a user's pod nor another test run's.
type singlePod struct {
	name, volume, stated string
	manifest             string
	base                 string // the app's URL on 127.0.0.1
}

func playSinglePod(t *testing.T) *singlePod {
	t.Helper()
	src, err := os.ReadFile("../deploy/kubernetes/single-pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	suffix := strconv.Itoa(os.Getpid())
	p := &singlePod{name: "stated-test-" + suffix, volume: "stated-test-" + suffix + "-data"}
	p.stated = p.name + "-stated"
	addr := freeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	p.base = "http://127.0.0.1:" + port
	text := string(src)
	for _, r := range []struct {
		old, new string
		n        int
	}{
		{"metadata:\n  name: userstore\n", "metadata:\n  name: " + p.name + "\n", 1},
		{"claimName: userstore-data\n", "claimName: " + p.volume + "\n", 1},
		// podman 4.3 names an emptyDir's volume after it, not after the pod.
		{"name: sock\n", "name: " + p.name + "-sock\n", 3},
		{"hostPort: 8080\n", "hostPort: " + port + "\n", 1},
	} {
		if got := strings.Count(text, r.old); got != r.n {
			t.Fatalf("single-pod.yaml holds %q %d times, want %d: update this test with the manifest", r.old, got, r.n)
		}
		text = strings.ReplaceAll(text, r.old, r.new)
	}
	dir := t.TempDir()
	p.manifest = filepath.Join(dir, "single-pod.yaml")
	if err := os.WriteFile(p.manifest, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{p.name + "-userstore", p.stated} {
				logs := runBounded(time.Minute, "", "podman", "logs", "--tail", "40", c)
				t.Logf("podman logs %s:\n%s", c, logs.out)
			}
		}
		p.down(t)
	})
	p.play(t)
	return p
}

// play runs podman kube play on the manifest.
func (p *singlePod) play(t *testing.T) {
	t.Helper()
	// kube play looks for a build context named like each image in its
	// working directory: it runs in the manifest's own temporary one.
	out := runBounded(2*time.Minute, filepath.Dir(p.manifest), "podman", "kube", "play", "--build=false", p.manifest)
	if out.err != nil {
		t.Fatalf("podman kube play: %v\n%s", out.err, out.out)
	}
}

// removePod removes the pod (podman kube down), keeping its volume.
func (p *singlePod) removePod(t *testing.T) {
	t.Helper()
	if out := runBounded(2*time.Minute, filepath.Dir(p.manifest), "podman", "kube", "down", p.manifest); out.err != nil && !strings.Contains(out.out, "no such pod") {
		t.Logf("podman kube down: %v\n%s", out.err, out.out)
		runBounded(time.Minute, "", "podman", "pod", "rm", "--force", p.name)
	}
}

// down removes the pod and its volume; it is safe to call twice.
func (p *singlePod) down(t *testing.T) {
	t.Helper()
	p.removePod(t)
	runBounded(time.Minute, "", "podman", "volume", "rm", "--force", p.volume)
}

func (p *singlePod) inspect(t *testing.T, container, format string) string {
	t.Helper()
	out := runBounded(time.Minute, "", "podman", "inspect", "--format", format, container)
	if out.err != nil {
		t.Fatalf("podman inspect %s: %v\n%s", container, out.err, out.out)
	}
	return strings.TrimSpace(out.out)
}

func (p *singlePod) restarts(t *testing.T, c string) int {
	n, err := strconv.Atoi(p.inspect(t, c, "{{.RestartCount}}"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (p *singlePod) running(t *testing.T, c string) bool {
	return p.inspect(t, c, "{{.State.Status}}") == "running"
}

func (p *singlePod) pid(t *testing.T, c string) int {
	pid, err := strconv.Atoi(p.inspect(t, c, "{{.State.Pid}}"))
	if err != nil || pid <= 0 {
		t.Fatalf("pid of %s: %q %v", c, p.inspect(t, c, "{{.State.Pid}}"), err)
	}
	return pid
}

// containerUID is the real uid of the container's main process, as the
// host's kernel sees it (a FROM scratch image has no id or ps to ask).
func (p *singlePod) containerUID(t *testing.T, c string) string {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid(t, c)))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			return f[1]
		}
	}
	t.Fatalf("no Uid line in /proc status of %s", c)
	return ""
}

// waitReady waits until the app's /readyz answers 200 (its stated answers
// reads).
func (p *singlePod) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	podWaitFor(t, timeout, "the app's /readyz to answer 200", func() bool {
		resp, err := podHTTP.Get(p.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// comeBack reports whether the stated container is running again within
// d, without the test starting it.
func podComesBack(t *testing.T, p *singlePod, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.running(t, p.stated) {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

var podHTTP = &http.Client{Timeout: 10 * time.Second}

// waitFor polls cond every 100 ms until it holds, and fails the test
// after timeout.
func podWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podWriter writes fields and counter adds through the app and records
// which were acknowledged: a field write answered 200 must read back, and
// a counter ends between its acknowledged and its attempted adds.
type podWriter struct {
	base string

	mu        sync.Mutex
	acked     map[string]string // "user/field" → value
	addsAcked map[string]int    // user → adds answered 200
	addsTried map[string]int    // user → adds sent
	failed    int
}

func (w *podWriter) put(t *testing.T, i int) bool {
	user, field, value := fmt.Sprintf("u%d", i%10), fmt.Sprintf("f%d", i), fmt.Sprintf("value-%d", i)
	req, err := http.NewRequest(http.MethodPut, w.base+"/users/"+user+"/"+field, strings.NewReader(value))
	if err != nil {
		t.Fatal(err)
	}
	ok := w.do(req)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		w.acked[user+"/"+field] = value
	} else {
		w.failed++
	}
	return ok
}

func (w *podWriter) add(t *testing.T, i int) bool {
	user := fmt.Sprintf("u%d", i%10)
	req, err := http.NewRequest(http.MethodPost, w.base+"/users/"+user+"/counters/writes?by=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.addsTried[user]++
	w.mu.Unlock()
	ok := w.do(req)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		w.addsAcked[user]++
	} else {
		w.failed++
	}
	return ok
}

func (w *podWriter) do(req *http.Request) bool {
	resp, err := podHTTP.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK && resp.Header.Get("X-Stated-Index") != ""
}

// background writes from index from on until the returned stop is called.
func (w *podWriter) background(t *testing.T, from int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := from; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if !w.put(t, i) || !w.add(t, i) {
				time.Sleep(50 * time.Millisecond) // stated is down: do not spin
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// waitAcked waits until n more field writes have been acknowledged.
func (w *podWriter) waitAcked(t *testing.T, n int) {
	t.Helper()
	w.mu.Lock()
	target := len(w.acked) + n
	w.mu.Unlock()
	podWaitFor(t, 60*time.Second, fmt.Sprintf("%d more acknowledged writes", n), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.acked) >= target
	})
}

func (w *podWriter) addsAckedTotal() int {
	n := 0
	for _, a := range w.addsAcked {
		n += a
	}
	return n
}

// verify reads every acknowledged field and every counter back through
// the app.
func (w *podWriter) verify(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for key, want := range w.acked {
		resp, err := podHTTP.Get(w.base + "/users/" + key)
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("acknowledged field %s: got %d %q, want %q", key, resp.StatusCode, body, want)
		}
	}
	for user, tried := range w.addsTried {
		resp, err := podHTTP.Get(w.base + "/users/" + user + "/counters/writes")
		if err != nil {
			t.Fatalf("GET counter of %s: %v", user, err)
		}
		var got struct{ Value *int64 }
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&got); err != nil || got.Value == nil {
			t.Fatalf("GET counter of %s: %d %q: %v", user, resp.StatusCode, body, err)
		}
		if v := int(*got.Value); v < w.addsAcked[user] || v > tried {
			t.Errorf("counter of %s is %d: want between %d acknowledged and %d attempted adds", user, v, w.addsAcked[user], tried)
		}
	}
}
