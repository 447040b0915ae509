package raftstore

import (
	"fmt"

	"github.com/hashicorp/raft"
)

// ReadRaftLog reads every entry of s's Raft log, from its first index to
// its last, as Raft would replaying it, and returns them by index. For
// tests of the log stores in package raftstore_test.
func ReadRaftLog(s *Store) (map[uint64]raft.Log, error) {
	first, err := s.log.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := s.log.LastIndex()
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]raft.Log, last-first+1)
	for i := first; i <= last && i > 0; i++ {
		var l raft.Log
		if err := s.log.GetLog(i, &l); err != nil {
			return nil, fmt.Errorf("entry %d of %d..%d: %w", i, first, last, err)
		}
		out[i] = l
	}
	return out, nil
}
