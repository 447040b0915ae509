package kafka

import (
	"os"
	"testing"

	"github.com/statedhq/stated/internal/testenv"
)

// testParallel is how many of this package's tests run at once unless
// go test is given -parallel. Each starts its own Kafka (kfake) and stated
// and spends nearly all its time waiting on them, for rebalances, fetch
// waits and the processor's pauses: the package took 115 s of wall time
// and 6 s of CPU one test at a time. go test's default (GOMAXPROCS, 2
// here) would leave the machine idle.
const testParallel = 8

// raceTestParallel is testParallel under the race detector, where the
// daemons the tests start in process are race builds (several times the
// CPU) and CI runs other race-built packages beside them: at 8, two-node
// clusters lost their leaders to missed leases again and again.
const raceTestParallel = 4

func TestMain(m *testing.M) {
	testenv.DefaultParallel(testParallel, raceTestParallel)
	os.Exit(m.Run())
}
