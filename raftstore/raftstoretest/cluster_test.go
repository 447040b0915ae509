package raftstoretest

import (
	"context"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

func TestNewClusterReplicatesToEveryNodeAndSurvivesRestarts(t *testing.T) {
	c := NewCluster(t, 3)
	l := c.Leader(t)
	members, leader, err := l.Members()
	if err != nil || len(members) != 3 || leader != l.NodeID() {
		t.Fatalf("members = %+v, leader %q, %v", members, leader, err)
	}
	for _, m := range members {
		if !m.Voter || m.GRPCAddr != grpcAddr(m.ID) || m.RaftAddr == "" {
			t.Fatalf("member %+v", m)
		}
	}
	if got := len(c.Followers()); got != 2 {
		t.Fatalf("%d followers, want 2", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	commit := func(seq uint64) uint64 {
		idx, err := c.Commit(ctx, &command.Commit{ClientID: "t", Seq: seq, Mutations: []command.Mutation{
			{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1},
		}}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	commit(1)
	c.Stop(1)
	c.Wipe(2)
	c.Restart(t, 1)
	c.Restart(t, 2)
	idx := commit(2)
	for i := range c.Len() {
		s := c.Node(i)
		if _, err := s.ReadBarrier(ctx, raftstore.Session, idx); err != nil {
			t.Fatal(err)
		}
		if e, _, _ := s.Get("ns", []byte("c"), fsm.KindCounter, nil); e.Counter != 2 {
			t.Fatalf("%s: counter %d, want 2", s.NodeID(), e.Counter)
		}
	}
}
