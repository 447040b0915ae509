package stated

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDaemonErrorsMatchSentinelsKeepTheirCodeAndMessage(t *testing.T) {
	sentinels := []error{ErrInvalidArgument, ErrFailedPrecondition, ErrUnavailable, ErrResourceExhausted,
		context.DeadlineExceeded, context.Canceled, ErrTxnDone, ErrClosed, ErrCodec}
	tests := []struct {
		code codes.Code
		msg  string
		want error // nil: no sentinel
	}{
		{codes.InvalidArgument, "mutations[3].key: 5000 bytes, limit 4096", ErrInvalidArgument},
		{codes.FailedPrecondition, "offsets[0]: fenced: epoch 3 < 4", ErrFailedPrecondition},
		{codes.Unavailable, "stated: this node is not the raft leader; retry on the leader", ErrUnavailable},
		{codes.ResourceExhausted, "trying to send message larger than max (73400381 vs. 67108864)", ErrResourceExhausted},
		{codes.DeadlineExceeded, "context deadline exceeded", context.DeadlineExceeded},
		{codes.Canceled, "context canceled", context.Canceled},
		{codes.Internal, "stated: internal error: disk full", nil},
		{codes.NotFound, "no such thing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			c := newFakeClient(&fakeState{commitErr: status.Error(tt.code, tt.msg)})
			_, err := c.Txn().Commit(context.Background())
			if got := status.Code(err); got != tt.code {
				t.Errorf("status.Code = %v, want %v", got, tt.code)
			}
			if st, ok := status.FromError(err); !ok || st.Message() != tt.msg {
				t.Errorf("status.FromError = %v, %v; want message %q", st, ok, tt.msg)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "stated: commit: ") {
				t.Errorf("Error() = %q, want the op and the daemon's message %q", err, tt.msg)
			}
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(err, %q) = %v", s, got)
				}
			}
		})
	}
}

func TestWrappedErrorsStillMatch(t *testing.T) {
	c := newFakeClient(&fakeState{getErr: status.Error(codes.InvalidArgument, "namespace: empty")})
	_, _, err := c.Get(context.Background(), "", []byte("k"))
	outer := errors.Join(errors.New("loading profile"), err)
	if !errors.Is(outer, ErrInvalidArgument) {
		t.Errorf("errors.Is through a wrapper failed: %v", outer)
	}
	if status.Code(outer) != codes.InvalidArgument {
		t.Errorf("status.Code through a wrapper = %v", status.Code(outer))
	}
}

func TestScanRefusesANegativeLimitAsInvalidArgument(t *testing.T) {
	f := &fakeState{}
	c := newFakeClient(f)
	var errs []error
	for _, err := range c.Scan(context.Background(), ScanQuery{Namespace: "ns", Limit: -1}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrInvalidArgument) || status.Code(errs[0]) != codes.InvalidArgument || !strings.Contains(errs[0].Error(), "limit") {
		t.Fatalf("got %v, want one InvalidArgument naming limit", errs)
	}
	if len(f.scans) != 0 {
		t.Error("scan sent despite a negative limit")
	}
}
