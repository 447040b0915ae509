package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// The cluster check of Raft connections. Members keep dialling a member
// that is down, on its Raft address, for as long as it is a member; when
// that address is handed to a node of another cluster (a reused port, a
// pod IP given to another deployment), the leader's replication and a
// candidate's vote requests would reach that node, which would take the
// higher term and follow this leader, and could append its entries where
// an index and term happen to match, or grant a vote this cluster counts
// toward its majority. etcd checks the cluster id on every peer message
// (rafthttp's X-Etcd-Cluster-ID) for the same reason.
//
// A connection starts with a preamble from the dialling node,
//
//	clusterMagic, clusterVersion, uvarint length, cluster id
//
// which the accepting node answers with clusterAccepted, or with
// clusterRefused followed by its own id (uvarint length first) before it
// closes the connection. The id is the one the node applied, or, on a
// node that bootstrapped a new cluster, the one it chose before its Raft
// port listened (its first leader records it). An empty id (a node that
// is joining and has not applied its cluster's id yet) is accepted by
// everyone and accepts everyone.
//
// A node of a cluster restored from a checkpoint of the dialling node's
// cluster answers clusterSuperseded instead, followed by its own id: the
// dialling node's data dir is from before a restore that replaced its
// cluster (a rollback to a savepoint whose other nodes were started on
// their old data dirs). The dialling node then stops serving (see
// Store.Superseded): otherwise the old cluster's majority would go on
// beside the restored one, on the same addresses and lineage.
//
// Older releases neither send nor understand the preamble. A connection
// whose first byte is not clusterMagic is served as it is (an older peer
// dialled), and a dial whose preamble is answered by the connection
// closing with no answer is made again without one (an older peer
// accepted: it reads the magic byte as an unknown RPC type, logs it and
// closes). That second dial is made each time, never remembered: a node
// of this release that was shutting down closes the same way, and the
// node of another cluster that may take its address next must be
// checked. Between nodes of this release every connection is checked.
const (
	clusterMagic      byte = 0xFA // not a hashicorp/raft RPC type (0-4)
	clusterVersion    byte = 1
	clusterAccepted   byte = 1
	clusterRefused    byte = 0
	clusterSuperseded byte = 2
	// maxClusterID bounds the id a preamble may carry (ids are 16 hex
	// digits).
	maxClusterID = 256
)

// ErrOtherCluster is a Raft connection refused because the two nodes
// belong to different clusters.
var ErrOtherCluster = errors.New("raftstore: the Raft peer belongs to another cluster")

// ErrSuperseded is a Raft connection refused by a node of a cluster
// restored from a checkpoint of this node's cluster: this node's cluster
// was replaced by that restore.
var ErrSuperseded = errors.New("raftstore: this node's cluster was replaced by a restore from its checkpoint")

// clusterLayer is a raft.StreamLayer that checks, on every connection,
// that both ends belong to one cluster (see above).
type clusterLayer struct {
	raft.StreamLayer
	// id returns this node's cluster id, "" while it has none.
	id func() string
	// restoredFrom returns the id of the cluster whose checkpoint this
	// node's cluster was restored from, "" if none.
	restoredFrom func() string
	// superseded is called when a peer answers that its cluster was
	// restored from this node's.
	superseded func(error)
	logger     *slog.Logger
}

func newClusterLayer(inner raft.StreamLayer, id, restoredFrom func() string, superseded func(error), logger *slog.Logger) *clusterLayer {
	return &clusterLayer{StreamLayer: inner, id: id, restoredFrom: restoredFrom, superseded: superseded, logger: logger}
}

// Dial connects to addr and has the peer check the cluster id.
func (l *clusterLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	conn, err := l.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	err = dialHandshake(conn, l.id(), timeout)
	switch {
	case err == nil:
		return conn, nil
	case errors.Is(err, errNoAnswer):
		conn.Close()
		l.logger.Debug("raft: a peer closed the connection on the cluster check, as releases before it do; dialling it again without the check",
			"peer", string(addr))
		return l.StreamLayer.Dial(addr, timeout)
	default:
		conn.Close()
		if errors.Is(err, ErrSuperseded) {
			l.superseded(fmt.Errorf("the node at %s: %w", addr, err))
		} else if errors.Is(err, ErrOtherCluster) {
			l.logger.Warn("raft: the node at a member's address belongs to another cluster: not sending it this cluster's entries or votes",
				"peer", string(addr), "error", err)
		}
		return nil, err
	}
}

// Accept returns the next connection, which checks the dialler's cluster
// id when it is first read (on the transport's goroutine for that
// connection, so that a slow peer does not hold up the others).
func (l *clusterLayer) Accept() (net.Conn, error) {
	conn, err := l.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &checkedConn{Conn: conn, id: l.id, restoredFrom: l.restoredFrom, logger: l.logger}, nil
}

// errNoAnswer is a preamble answered by the connection closing.
var errNoAnswer = errors.New("raftstore: the peer closed the connection without answering the cluster check")

// dialHandshake sends this node's cluster id and reads the answer.
func dialHandshake(conn net.Conn, own string, timeout time.Duration) error {
	if timeout > 0 {
		conn.SetDeadline(time.Now().Add(timeout))
		defer conn.SetDeadline(time.Time{})
	}
	if _, err := conn.Write(appendClusterID([]byte{clusterMagic, clusterVersion}, own)); err != nil {
		return fmt.Errorf("raftstore: send the cluster check: %w", err)
	}
	r := byteReader{conn}
	answer, err := r.ReadByte()
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), isReset(err):
		return errNoAnswer
	case err != nil:
		return fmt.Errorf("raftstore: read the cluster check's answer: %w", err)
	case answer == clusterAccepted:
		return nil
	case answer != clusterRefused && answer != clusterSuperseded:
		return fmt.Errorf("raftstore: the peer answered the cluster check with %#x: not a stated node", answer)
	}
	theirs, err := readClusterID(r)
	if err != nil {
		return fmt.Errorf("%w (its id unreadable: %v)", ErrOtherCluster, err)
	}
	if answer == clusterSuperseded {
		return fmt.Errorf("%w: it is in cluster %s, restored from a checkpoint of this node's cluster %s; %w", ErrOtherCluster, theirs, own, ErrSuperseded)
	}
	return fmt.Errorf("%w: it is in cluster %s, this node in %s", ErrOtherCluster, theirs, own)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// appendClusterID appends id as the check carries it: its length as a
// uvarint, then its bytes.
func appendClusterID(dst []byte, id string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(id))), id...)
}

// readClusterID reads what appendClusterID wrote.
func readClusterID(r io.ByteReader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	if n > maxClusterID {
		return "", fmt.Errorf("a cluster id of %d bytes", n)
	}
	b := make([]byte, n)
	for i := range b {
		if b[i], err = r.ReadByte(); err != nil {
			return "", err
		}
	}
	return string(b), nil
}

// checkedConn is an accepted connection whose first read runs the
// accepting side of the cluster check.
type checkedConn struct {
	net.Conn
	id, restoredFrom func() string
	logger           *slog.Logger

	checked bool
	err     error  // the check's failure, returned by every read
	first   []byte // bytes read by the check that belong to Raft
}

func (c *checkedConn) Read(p []byte) (int, error) {
	if !c.checked {
		c.checked = true
		c.err = c.check()
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// check reads the first byte: a preamble is checked and answered; anything
// else is an older peer's first RPC, kept for Raft to read.
func (c *checkedConn) check() error {
	r := byteReader{c.Conn}
	first, err := r.ReadByte()
	if err != nil {
		return err
	}
	if first != clusterMagic {
		c.first = []byte{first}
		return nil
	}
	version, err := r.ReadByte()
	if err != nil {
		return err
	}
	if version != clusterVersion {
		return fmt.Errorf("raftstore: cluster check version %d from %s; this release speaks %d", version, c.RemoteAddr(), clusterVersion)
	}
	theirs, err := readClusterID(r)
	if err != nil {
		return fmt.Errorf("raftstore: cluster check from %s: %w", c.RemoteAddr(), err)
	}
	own := c.id()
	if theirs == "" || own == "" || theirs == own {
		_, err := c.Conn.Write([]byte{clusterAccepted})
		return err
	}
	if from := c.restoredFrom(); from != "" && from == theirs {
		c.Conn.Write(appendClusterID([]byte{clusterSuperseded}, own))
		c.logger.Warn("raft: refused a connection from a node of the cluster this one was restored from: it is told to stop; wipe its data dir and start it with --join",
			"peer", c.RemoteAddr().String(), "its_cluster", theirs, "cluster", own)
		return fmt.Errorf("%w: %s is in cluster %s, which this cluster %s was restored from", ErrOtherCluster, c.RemoteAddr(), theirs, own)
	}
	c.Conn.Write(appendClusterID([]byte{clusterRefused}, own))
	c.logger.Warn("raft: refused a connection from a node of another cluster", "peer", c.RemoteAddr().String(), "its_cluster", theirs, "cluster", own)
	return fmt.Errorf("%w: %s is in cluster %s, this node in %s", ErrOtherCluster, c.RemoteAddr(), theirs, own)
}

// byteReader reads a connection one byte at a time, so that the check
// never reads past itself into what Raft reads next.
type byteReader struct{ net.Conn }

func (b byteReader) ReadByte() (byte, error) {
	var one [1]byte
	_, err := io.ReadFull(b.Conn, one[:])
	return one[0], err
}
