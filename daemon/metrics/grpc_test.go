package metrics

import (
	"testing"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func TestConsistencyLabelIsTheLevelTheReadRunsAt(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    *statedv1.ReadOptions
		want string
	}{
		{"no read options", nil, "local"},
		{"unspecified", &statedv1.ReadOptions{}, "local"},
		{"unspecified with a min index", &statedv1.ReadOptions{MinIndex: 7}, "session"},
		{"local", &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LOCAL}, "local"},
		{"local with a min index", &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LOCAL, MinIndex: 7}, "local"},
		{"session", &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION}, "session"},
		{"linearizable", &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}, "linearizable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Consistency(tc.o); got != tc.want {
				t.Errorf("Consistency(%v) = %q, want %q", tc.o, got, tc.want)
			}
		})
	}
}
