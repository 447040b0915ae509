package raftstoretest

import "errors"

var (
	// ErrPartitioned is returned by a FaultLayer's Dial, and by Read and
	// Write on its connections, between two nodes the Network has cut apart.
	// It is a net.Error that timed out, as a real partition shows itself
	// to the dialling side, so that code telling a peer it cannot reach
	// from one that answered (raftstore's transport, which sends
	// replication calls to an unreachable follower again) sees a cut as it
	// would see the real thing.
	ErrPartitioned error = partitioned{}
	// ErrBadHello is returned for an accepted connection that did not
	// start with a FaultLayer hello header.
	ErrBadHello = errors.New("raftstoretest: bad hello header")
)

type partitioned struct{}

func (partitioned) Error() string   { return "raftstoretest: partitioned" }
func (partitioned) Timeout() bool   { return true }
func (partitioned) Temporary() bool { return true }
