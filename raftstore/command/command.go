package command

import (
	"crypto/sha256"
	"sync"
)

// Type tells what a command does.
type Type uint8

const (
	// TypeCommit applies a transaction: mutations and offsets, atomically.
	TypeCommit Type = 1
	// TypeExpire deletes entries whose TTL ran out before Now.
	TypeExpire Type = 2
	// TypeSetClusterID records the cluster's id, once: a later one is
	// ignored, so that the first leader's choice stands.
	TypeSetClusterID Type = 3
	// TypeSetMember records a member's addresses in cluster metadata.
	TypeSetMember Type = 4
	// TypeRemoveMember drops a member from cluster metadata.
	TypeRemoveMember Type = 5
	// TypeClaim claims partitions of a consumer group for an owner, each
	// with a fresh epoch that fences out every earlier owner.
	TypeClaim Type = 6
	// TypeRelease gives up partitions claimed at the given epochs.
	TypeRelease Type = 7
	// TypeCheckpoint is the barrier of a checkpoint epoch: the state
	// machine numbers it (the last epoch plus one) and every replica makes
	// a local Pebble checkpoint of the state as of this entry; with
	// Changelog set (format version 6), none does: the checkpoint is an
	// earlier one's tables and the log's entries up to this one.
	TypeCheckpoint Type = 8
	// TypeCheckpointDone records that checkpoint Epoch was uploaded and
	// its manifest written; replicas drop their local copies up to it.
	TypeCheckpointDone Type = 9
	// TypeOpenSession opens a client session for Session.ClientID with
	// the id Session.ID, fencing every older session of that client id.
	TypeOpenSession Type = 10
	// TypeExpireSessions deletes the sessions listed in Expired whose idle
	// timeout ran out before Now and which saw no commit since the leader
	// listed them.
	TypeExpireSessions Type = 11
	// TypeDefineWindows defines the window namespace Windows (format
	// version 4): once, immutably; the same spec again is a no-op.
	TypeDefineWindows Type = 12
	// TypeWindowTick recomputes every window namespace's watermark at Now,
	// so that sources idle past their timeout stop holding it back, and
	// closes the windows and fires the timers that became due.
	TypeWindowTick Type = 13
	// TypeCommitBatch carries several independent commits, Batch, in one
	// entry (format version 5): each applies as a TypeCommit entry of its
	// own would, atomically and with its own session check and outcome,
	// at the entry's index and time. It is what a CommitBatch call
	// proposes, so that its commits cost one proposal and one answer.
	TypeCommitBatch Type = 14
)

// Op is the operation of one mutation.
type Op uint8

// The values match stated.v1's MutationKind so that the daemon maps them
// one to one, but the log format depends only on these constants.
const (
	OpPut          Op = 1
	OpDelete       Op = 2
	OpMapPut       Op = 3
	OpMapDelete    Op = 4
	OpListAppend   Op = 5
	OpCounterAdd   Op = 6
	OpDeletePrefix Op = 7
	opMax             = OpDeletePrefix
)

// Valid reports whether o is a known operation.
func (o Op) Valid() bool { return o >= OpPut && o <= opMax }

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpMapPut:
		return "map-put"
	case OpMapDelete:
		return "map-delete"
	case OpListAppend:
		return "list-append"
	case OpCounterAdd:
		return "counter-add"
	case OpDeletePrefix:
		return "delete-prefix"
	}
	return "unknown"
}

// Command is one Raft log entry.
type Command struct {
	Type Type
	// Now is the leader's wall-clock time in Unix nanoseconds when it
	// accepted the command. Expiry is judged against it, never a local clock.
	Now int64
	// Commit is set when Type is TypeCommit.
	Commit *Commit
	// Batch is set when Type is TypeCommitBatch.
	Batch []*Commit
	// ExpireLimit caps how many expired entries a TypeExpire command
	// deletes, so that one entry never stalls the apply loop.
	ExpireLimit uint32
	// ClusterID is set when Type is TypeSetClusterID.
	ClusterID string
	// Member is set when Type is TypeSetMember, and its ID alone when
	// Type is TypeRemoveMember.
	Member *Member
	// Claim is set when Type is TypeClaim or TypeRelease.
	Claim *Claim
	// Epoch is set when Type is TypeCheckpointDone, and Offsets to the
	// completed checkpoint's offsets: replicas record them as the group's
	// checkpointed offsets, which consumers commit to Kafka.
	Epoch   uint64
	Offsets []Offset
	// Changelog is set when Type is TypeCheckpoint for the barrier of a
	// changelog checkpoint: the state of an earlier checkpoint's tables
	// and the Raft log's command entries since, up to this one.
	Changelog bool
	// Session is set when Type is TypeOpenSession.
	Session *Session
	// Expired is set when Type is TypeExpireSessions.
	Expired []SessionRef
	// Windows is set when Type is TypeDefineWindows.
	Windows *WindowSpec
	// Version is the format version the command was decoded from (zero
	// for a command built in memory, which encodes as the newest). Commits
	// of versions before 3 keep their per-commit retry records, so that a
	// log written by an older stated applies as it did then.
	Version byte
}

// Session is a client session as TypeOpenSession opens it.
type Session struct {
	ClientID string
	// ID is the session's id, drawn at random by the leader (never zero),
	// so that ids stay distinct across clusters and restores.
	ID uint64
	// IdleTimeout, in nanoseconds, is how long the session lives after
	// its last commit (or its opening), by the leader's clocks.
	IdleTimeout int64
}

// SessionRef names a session the leader found idle past its timeout, with
// the last activity it saw; the state machine deletes the session only if
// it is still that session and still idle.
type SessionRef struct {
	ClientID   string
	ID         uint64
	LastActive int64
}

// Claim names partitions of a consumer group that Owner claims (TypeClaim)
// or releases (TypeRelease).
type Claim struct {
	Group string
	// Owner is the client id of the claimant; commits that move a claimed
	// partition's offset must carry it as their client id.
	Owner      string
	Partitions []PartitionEpoch
}

// PartitionEpoch is a partition of a topic and, where it matters (a
// release), the epoch of its claim.
type PartitionEpoch struct {
	Topic     string
	Partition int32
	Epoch     uint64
}

// Member is a node of the cluster as its metadata records it.
type Member struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	// Incarnation is the random id the node made when it began to join
	// (format version 5; empty before, and for the bootstrap node). The
	// leader records it before it adds the node as a voter; the node
	// reading it back from its own log knows its join was accepted.
	Incarnation string
}

// Commit is a transaction: every mutation and every offset, or none.
type Commit struct {
	// ClientID names the committer (the owner of claimed partitions).
	ClientID string
	// SessionID, Lane and Seq identify the commit for retries: with a
	// session open, each (lane, sequence) applies at most once. Zero
	// SessionID and Seq mean no retry protection.
	SessionID uint64
	Lane      uint32
	Seq       uint64
	// Hash is PayloadHash of the commit, set by the leader when the commit
	// has a session: a retry must match it.
	Hash      [16]byte
	Mutations []Mutation
	Offsets   []Offset
	// Window parts (format version 4): records added to windows,
	// watermark hints, acknowledged emissions and timers, applied with
	// the mutations and offsets, atomically.
	WindowAdds     []WindowAdd
	WatermarkHints []WatermarkHint
	Acks           []EmissionAck
	Timers         []TimerOp
}

// Mutation changes the state under one key.
type Mutation struct {
	Op        Op
	Namespace string
	Key       []byte
	SubKey    []byte
	Value     []byte
	Delta     int64
	// TTL, when positive, is how many nanoseconds after the command's Now
	// the written entry expires; zero means never. Because Now is fixed by
	// the leader, every replica computes the same expiry time.
	TTL int64
}

// Offset is the next offset to consume for a partition of a topic.
type Offset struct {
	Group     string
	Topic     string
	Partition int32
	Offset    int64
	// Epoch is the epoch of the committer's claim on the partition, zero
	// for a partition that was never claimed. A commit whose epoch is not
	// the partition's current claim is refused (fencing).
	Epoch uint64
}

// PayloadHash is a digest of what the commit changes, its mutations,
// offsets and window parts in their encoded form, without its identity (client, session,
// lane, sequence) or the leader's time. A retry of a commit has the same
// hash; any change to a mutation or an offset gives another.
func (c *Commit) PayloadHash() [16]byte {
	bp := payloadBufs.Get().(*[]byte)
	// A commit without window parts hashes as format version 3 did, so
	// that a retry across an upgrade still matches its lane's record.
	buf := appendStatePayload((*bp)[:0], c)
	if hasWindowParts(c) {
		buf = appendWindowPayload(buf, c)
	}
	out := digest(buf)
	if cap(buf) <= maxPooledPayload {
		*bp = buf
		payloadBufs.Put(bp)
	}
	return out
}

// hasWindowParts reports whether c carries any window part, which its
// PayloadHash then covers.
func hasWindowParts(c *Commit) bool {
	return len(c.WindowAdds)+len(c.WatermarkHints)+len(c.Acks)+len(c.Timers) > 0
}

// digest is a payload hash: the first 16 bytes of the payload's SHA-256.
func digest(payload []byte) [16]byte {
	h := sha256.Sum256(payload)
	var out [16]byte
	copy(out[:], h[:])
	return out
}

// payloadBufs holds encoding buffers for PayloadHash, which the leader
// runs for every commit in a session; buffers past maxPooledPayload (a
// rare huge commit) are left to the garbage collector.
var payloadBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledPayload = 1 << 20
