package daemontest

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// stallReport describes the process and the machine when a daemon missed
// a start bound: the kernel's pressure stall figures (how much of the
// last 10, 60 and 300 s tasks waited for CPU, I/O or memory) and the
// stacks of the goroutines in hashicorp/raft. A single node that takes
// more than its heartbeat timeout to elect itself, by many seconds, is
// the machine or a blocked Raft goroutine, and this tells them apart.
func stallReport() string {
	var b strings.Builder
	for _, r := range []string{"cpu", "io", "memory"} {
		if p, err := os.ReadFile("/proc/pressure/" + r); err == nil {
			for line := range strings.Lines(string(p)) {
				fmt.Fprintf(&b, "pressure %s %s", r, line)
			}
		}
	}
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		if len(buf) >= 64<<20 {
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	const limit = 64 << 10
	shown, total := 0, 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if !bytes.Contains(g, []byte("github.com/hashicorp/raft.")) {
			continue
		}
		total++
		if b.Len()+len(g) > limit {
			continue
		}
		shown++
		b.Write(g)
		b.WriteString("\n\n")
	}
	fmt.Fprintf(&b, "%d goroutines in hashicorp/raft, %d shown\n", total, shown)
	return b.String()
}
