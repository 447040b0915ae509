package raftstoretest

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability checker is porcupine
// (github.com/anishathalye/porcupine), a small, well-kept checker of
// concurrent histories against a sequential model. The model here is one
// counter with two operations: add a delta, and read the value.

// counterInput is an operation on the counter.
type counterInput struct {
	Add   bool // false: a read
	Delta int64
}

// counterOutput is what an operation observed.
type counterOutput struct {
	Value int64 // of a read
}

// CounterModel is the sequential specification of a counter that starts
// at zero: an add always succeeds and adds its delta, a read returns the
// sum of the adds linearized before it.
//
// An add whose outcome is unknown (it timed out, or the client gave up
// retrying) is recorded as returning never: porcupine may then linearize
// it anywhere after its call, including after every other operation,
// which is the same as it never having happened.
func CounterModel() porcupine.Model {
	return porcupine.Model{
		Init: func() any { return int64(0) },
		Step: func(state, input, output any) (bool, any) {
			v, in := state.(int64), input.(counterInput)
			if in.Add {
				return true, v + in.Delta
			}
			return output.(counterOutput).Value == v, v
		},
		DescribeOperation: func(input, output any) string {
			if in := input.(counterInput); in.Add {
				return fmt.Sprintf("add(%d)", in.Delta)
			}
			return fmt.Sprintf("read() -> %d", output.(counterOutput).Value)
		},
		DescribeState: func(state any) string { return fmt.Sprint(state.(int64)) },
	}
}

// History records the operations of concurrent clients on one counter.
// It is safe for concurrent use.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// NewHistory returns an empty history whose clock starts now.
func NewHistory() *History { return &History{start: time.Now()} }

// Add records an add of delta by client that was called at call and
// acknowledged at ret. When acked is false the outcome is unknown and ret
// is ignored. A failed add that is known not to have applied need not be
// recorded at all.
func (h *History) Add(client int, delta int64, call, ret time.Time, acked bool) {
	r := h.at(ret)
	if !acked {
		r = math.MaxInt64
	}
	h.record(porcupine.Operation{
		ClientId: client, Input: counterInput{Add: true, Delta: delta},
		Call: h.at(call), Output: counterOutput{}, Return: r,
	})
}

// Read records a read by client, called at call, that returned value at
// ret. Failed reads have no effect and are not recorded.
func (h *History) Read(client int, value int64, call, ret time.Time) {
	h.record(porcupine.Operation{
		ClientId: client, Input: counterInput{},
		Call: h.at(call), Output: counterOutput{Value: value}, Return: h.at(ret),
	})
}

// Len is the number of operations recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

func (h *History) at(t time.Time) int64 { return t.Sub(h.start).Nanoseconds() }

func (h *History) record(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// CheckCounter checks h against CounterModel. It returns nil when h is
// linearizable, and an error describing why not, or that the check did
// not finish within timeout.
func CheckCounter(h *History, timeout time.Duration) error {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(CounterModel(), ops, timeout)
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		return fmt.Errorf("raftstoretest: linearizability check of %d operations did not finish in %v", len(ops), timeout)
	}
	return fmt.Errorf("raftstoretest: history of %d operations is not linearizable; longest linearizable prefix: %s",
		len(ops), describeLongest(info))
}

// describeLongest describes the longest partial linearization porcupine
// found, which ends just before the operation that could not be placed.
func describeLongest(info porcupine.LinearizationInfo) string {
	var longest []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
	}
	m := CounterModel()
	const tail = 8 // the interesting part is at the end
	s, skipped := "", max(len(longest)-tail, 0)
	if skipped > 0 {
		s = fmt.Sprintf("(%d operations) ", skipped)
	}
	for _, op := range longest[skipped:] {
		s += fmt.Sprintf("[client %d %s @%v..%v] ", op.ClientId, m.DescribeOperation(op.Input, op.Output),
			time.Duration(op.Call), time.Duration(min(op.Return, int64(time.Hour))))
	}
	return s
}
