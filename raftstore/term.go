package raftstore

import (
	"fmt"

	"github.com/hashicorp/raft"
)

// TermAt returns the term of the Raft log entry at index, so that an
// index and a term reported together name the same entry. It fails when
// the log no longer holds the entry (compacted into a snapshot).
func (s *Store) TermAt(index uint64) (uint64, error) {
	var l raft.Log
	if err := s.log.GetLog(index, &l); err != nil {
		return 0, fmt.Errorf("raftstore: the Raft log does not hold entry %d: %w", index, err)
	}
	return l.Term, nil
}
