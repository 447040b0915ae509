package raftstoretest

import (
	"strings"
	"testing"
	"time"
)

func TestCounterCheckerAcceptsLinearizableAndRejectsStaleHistories(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type add struct {
		client    int
		delta     int64
		call, ret int
		acked     bool
	}
	type read struct {
		client    int
		value     int64
		call, ret int
	}
	for _, tc := range []struct {
		name  string
		adds  []add
		reads []read
		ok    bool
	}{
		{
			name:  "sequential adds then a read of their sum",
			adds:  []add{{0, 1, 10, 20, true}, {0, 2, 30, 40, true}},
			reads: []read{{1, 3, 50, 60}},
			ok:    true,
		},
		{
			name:  "a read concurrent with an add may see it or not",
			adds:  []add{{0, 1, 10, 50, true}},
			reads: []read{{1, 0, 20, 30}, {2, 1, 25, 35}},
			ok:    true,
		},
		{
			name:  "an add of unknown outcome may have happened",
			adds:  []add{{0, 5, 10, 0, false}},
			reads: []read{{1, 5, 100, 110}},
			ok:    true,
		},
		{
			name:  "an add of unknown outcome may not have happened",
			adds:  []add{{0, 5, 10, 0, false}},
			reads: []read{{1, 0, 100, 110}},
			ok:    true,
		},
		{
			name:  "a read after an acknowledged add must see it",
			adds:  []add{{0, 1, 10, 20, true}},
			reads: []read{{1, 0, 30, 40}},
			ok:    false,
		},
		{
			name:  "reads must not go back in time",
			adds:  []add{{0, 1, 10, 100, true}},
			reads: []read{{1, 1, 20, 30}, {2, 0, 40, 50}},
			ok:    false,
		},
		{
			name:  "an add of unknown outcome cannot be seen and then unseen",
			adds:  []add{{0, 5, 10, 0, false}},
			reads: []read{{1, 5, 20, 30}, {1, 0, 40, 50}},
			ok:    false,
		},
		{
			name:  "a read cannot see a sum that no order of the adds gives",
			adds:  []add{{0, 1, 10, 20, true}, {1, 2, 10, 20, true}},
			reads: []read{{2, 2, 30, 40}},
			ok:    false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistory()
			h.start = t0
			for _, a := range tc.adds {
				h.Add(a.client, a.delta, at(a.call), at(a.ret), a.acked)
			}
			for _, r := range tc.reads {
				h.Read(r.client, r.value, at(r.call), at(r.ret))
			}
			err := CheckCounter(h, 5*time.Second)
			if tc.ok && err != nil {
				t.Fatalf("linearizable history rejected: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "not linearizable")) {
				t.Fatalf("non-linearizable history: err = %v, want it rejected", err)
			}
		})
	}
}
