package raftstoretest

import "errors"

var (
	// ErrPartitioned is returned by a FaultLayer's Dial, and by Read and
	// Write on its connections, between two nodes the Network has cut apart.
	ErrPartitioned = errors.New("raftstoretest: partitioned")
	// ErrBadHello is returned for an accepted connection that did not
	// start with a FaultLayer hello header.
	ErrBadHello = errors.New("raftstoretest: bad hello header")
)
