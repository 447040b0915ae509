// Package raftstoretest runs real raftstore clusters inside one test
// process, for tests of replication, failover, membership and partitions.
//
// NewCluster(t, 3) starts three raftstore.Store nodes on 127.0.0.1, each in
// its own t.TempDir(), with short Raft timeouts; node 0 bootstraps and the
// others join through the leader. Nodes can be stopped, restarted on the
// same directory and address, wiped, added and removed. Every node's Raft
// transport runs over a FaultLayer of one shared Network, on which a test
// partitions or isolates nodes and heals them again.
//
// The package also holds a linearizability checker for a single counter
// (History, CheckCounter) built on github.com/anishathalye/porcupine.
//
// It is for tests only: it must never be imported by non-test code.
package raftstoretest
