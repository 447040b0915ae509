package daemon

import (
	"github.com/statedhq/stated/daemon/grpcapi"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/command"
)

// FieldError is a refusal of one field of a request, named as on the
// wire ("size_ms").
type FieldError = command.FieldError

// MaxEventTime is the greatest event time, in milliseconds since the Unix
// epoch, that a window add, a watermark or a window read may carry.
const MaxEventTime = command.MaxEventTime

// ValidateWindowSpec checks a window spec as the daemon checks a
// DefineWindows request, so that a command line can refuse a bad flag
// before it dials; a refusal is a *FieldError.
func ValidateWindowSpec(w *statedv1.WindowSpec) error {
	_, err := grpcapi.ValidateWindowSpec(w)
	return err
}
