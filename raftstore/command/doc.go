// Package command defines the entries stated proposes to Raft and their
// binary encoding.
//
// A command is everything the state machine needs to apply it
// deterministically: the leader fixes the wall-clock time (for TTL expiry)
// inside the command, so no replica reads a clock. The encoding is owned
// here, not by the gRPC contract, so that the wire API can change without
// changing the Raft log format. Every encoding starts with a format version
// byte; Decode refuses versions it does not know rather than guessing.
package command
