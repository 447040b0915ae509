package uploader

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound is returned for a checkpoint or savepoint the bucket
	// does not hold.
	ErrNotFound = errors.New("uploader: not found")
	// ErrFormat is returned for a manifest this version cannot read: a
	// newer format version, or one that does not parse or describes
	// impossible files.
	ErrFormat = errors.New("uploader: unsupported manifest format")
	// ErrInvalid is returned for a bad argument, e.g. a savepoint name.
	ErrInvalid = errors.New("uploader: invalid argument")
	// ErrCorrupt is returned when a checkpoint file is missing from the
	// bucket or its size or SHA-256 is not what the manifest says.
	ErrCorrupt = errors.New("uploader: checkpoint not intact")
	// ErrPinned is returned by Delete for a checkpoint pinned as a
	// savepoint; DeleteSavepoint removes the pin.
	ErrPinned = errors.New("uploader: checkpoint is pinned as a savepoint")
	// ErrNewest is returned by Delete for the newest checkpoint, unless
	// forced: the offsets consumers were told are that checkpoint's.
	ErrNewest = errors.New("uploader: the newest checkpoint")
	// ErrBucketAhead is returned by an upload whose epoch is at or below
	// a checkpoint the bucket holds already (a manifest or a savepoint):
	// its caller's epochs did not start above the bucket's, as they do
	// after a restore from it. Its manifest would sort below the
	// bucket's, so Latest would not return it and Retain would delete it
	// first; it could also replace a manifest of the same epoch.
	ErrBucketAhead = errors.New("uploader: the bucket holds newer checkpoints")
)

// corruptError is a blob that is missing or whose content is not what
// the manifest says. It is retried once, since a read cut short looks the
// same, and then reported.
type corruptError struct{ problem string }

func (e *corruptError) Error() string { return e.problem }

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *corruptError) Unwrap() error { return ErrCorrupt }

// localError is a failure of the local file system, which retrying the
// blob operation does not cure.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// IsLocal reports whether err is a failure of the local file system (a
// download's write into its directory: a full disk, an I/O error), which
// neither a retry nor another checkpoint cures.
func IsLocal(err error) bool {
	var le *localError
	return errors.As(err, &le)
}

// local marks err as a local file system error; nil stays nil.
func local(err error) error {
	if err == nil {
		return nil
	}
	return &localError{err}
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
