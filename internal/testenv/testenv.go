// Package testenv holds what several packages' tests need to know of the
// way they run: whether they run under the race detector, and how many
// of their tests run at once.
package testenv

import (
	"flag"
	"fmt"
)

// DefaultParallel sets -test.parallel to normal, or to underRace under
// the race detector, unless the command line gave it. A TestMain calls
// it before m.Run. Tests that mostly wait on the processes, clusters or
// Kafka they start run more at once than go test's default (GOMAXPROCS);
// under the race detector those in-process daemons and clients are race
// builds, several times the CPU, so fewer.
func DefaultParallel(normal, underRace int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if given {
		return
	}
	n := normal
	if Race {
		n = underRace
	}
	flag.Set("test.parallel", fmt.Sprint(n))
}
