package fsm

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// Claim is the current claim on one partition of a consumer group's topic.
// Epochs grow by one with every claim, so the newest claimant holds the
// highest epoch and every earlier one is fenced out.
type Claim struct {
	Group     string
	Topic     string
	Partition int32
	Epoch     uint64
	// Owner is the client id of the claimant.
	Owner string
	// Released is set when the owner gave the partition up; its epoch
	// then moves no offsets until the next claim.
	Released bool
	// ClaimedAt is the leader's Unix nanosecond time of the claim.
	ClaimedAt int64
}

// ClaimedPartition is what a TypeClaim command returns for one partition:
// the new epoch and the offset stored for the partition at that moment,
// from which the claimant resumes.
type ClaimedPartition struct {
	Topic     string
	Partition int32
	Epoch     uint64
	Offset    int64
	HasOffset bool
}

// A claim record is the epoch, a flags byte, the claim time and the owner.
const claimReleased = 1

func encodeClaim(c *Claim) []byte {
	v := binary.BigEndian.AppendUint64(nil, c.Epoch)
	var flags byte
	if c.Released {
		flags |= claimReleased
	}
	v = append(v, flags)
	v = binary.BigEndian.AppendUint64(v, uint64(c.ClaimedAt))
	return append(v, c.Owner...)
}

// wellFormedClaim reports whether v has a claim record's layout.
func wellFormedClaim(v []byte) bool { return len(v) >= 17 && v[8]&^claimReleased == 0 }

func decodeClaim(group, topic string, partition int32, v []byte) (Claim, error) {
	if !wellFormedClaim(v) {
		return Claim{}, fmt.Errorf("%w: claim record of group %q topic %q partition %d", ErrCorrupt, group, topic, partition)
	}
	return Claim{
		Group: group, Topic: topic, Partition: partition,
		Epoch:     binary.BigEndian.Uint64(v),
		Released:  v[8]&claimReleased != 0,
		ClaimedAt: int64(binary.BigEndian.Uint64(v[9:17])),
		Owner:     string(v[17:]),
	}, nil
}

func claimKey(group, topic string, partition int32) []byte {
	k := appendComponent([]byte{prefixClaim}, []byte(group))
	k = appendComponent(k, []byte(topic))
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func claimGroupPrefix(group string) []byte {
	return appendComponent([]byte{prefixClaim}, []byte(group))
}

// loadClaim reads a partition's claim through the applier.
func (a *applier) loadClaim(group, topic string, partition int32) (Claim, bool, error) {
	v, ok, err := a.get(claimKey(group, topic, partition))
	if err != nil || !ok {
		return Claim{}, false, err
	}
	c, err := decodeClaim(group, topic, partition, v)
	return c, err == nil, err
}

// claim gives each partition a new epoch owned by c.Owner and returns the
// epochs with the offsets stored at this point of the log.
func (a *applier) claim(c *command.Claim) ([]ClaimedPartition, error) {
	if c == nil || c.Owner == "" {
		return nil, reject("owner", "empty")
	}
	out := make([]ClaimedPartition, 0, len(c.Partitions))
	for _, p := range c.Partitions {
		cur, _, err := a.loadClaim(c.Group, p.Topic, p.Partition)
		if err != nil {
			return nil, err
		}
		next := Claim{Epoch: cur.Epoch + 1, Owner: c.Owner, ClaimedAt: a.now}
		if err := a.b.Set(claimKey(c.Group, p.Topic, p.Partition), encodeClaim(&next), nil); err != nil {
			return nil, err
		}
		cp := ClaimedPartition{Topic: p.Topic, Partition: p.Partition, Epoch: next.Epoch}
		v, ok, err := a.get(offsetKey(c.Group, p.Topic, p.Partition))
		if err != nil {
			return nil, err
		}
		if ok {
			if len(v) != 8 {
				return nil, fmt.Errorf("%w: offset of %d bytes", ErrCorrupt, len(v))
			}
			cp.Offset, cp.HasOffset = int64(binary.BigEndian.Uint64(v)), true
		}
		out = append(out, cp)
	}
	return out, nil
}

// release marks the partitions' claims released where the epoch and owner
// still match; a claim superseded since is left to its new owner.
func (a *applier) release(c *command.Claim) error {
	if c == nil || c.Owner == "" {
		return reject("owner", "empty")
	}
	for _, p := range c.Partitions {
		cur, ok, err := a.loadClaim(c.Group, p.Topic, p.Partition)
		if err != nil {
			return err
		}
		if !ok || cur.Epoch != p.Epoch || cur.Owner != c.Owner || cur.Released {
			continue
		}
		cur.Released = true
		if err := a.b.Set(claimKey(c.Group, p.Topic, p.Partition), encodeClaim(&cur), nil); err != nil {
			return err
		}
	}
	return nil
}

// fence checks that a commit by clientID may move offset o (the commit's
// offsets[i]): a partition never claimed takes offsets without an epoch; a
// claimed one only from its current, unreleased owner at its epoch.
func (a *applier) fence(i int, o *command.Offset, clientID string) error {
	cur, claimed, err := a.loadClaim(o.Group, o.Topic, o.Partition)
	if err != nil {
		return err
	}
	fe := &FenceError{
		Field: fmt.Sprintf("offsets[%d].epoch", i),
		Group: o.Group, Topic: o.Topic, Partition: o.Partition,
		Epoch: o.Epoch, Current: cur.Epoch, Owner: cur.Owner,
	}
	switch {
	case !claimed && o.Epoch == 0:
		return nil
	case !claimed:
		fe.Reason = fmt.Sprintf("epoch %d was never issued: the partition is not claimed", o.Epoch)
	case o.Epoch == 0:
		fe.Reason = fmt.Sprintf("the partition is claimed (epoch %d, owner %q) and the commit carries no epoch", cur.Epoch, cur.Owner)
	case o.Epoch > cur.Epoch:
		fe.Reason = fmt.Sprintf("epoch %d is from the future: the newest claim is epoch %d (owner %q)", o.Epoch, cur.Epoch, cur.Owner)
	case o.Epoch < cur.Epoch:
		fe.Reason = fmt.Sprintf("epoch %d was superseded by epoch %d (owner %q)", o.Epoch, cur.Epoch, cur.Owner)
	case cur.Released:
		fe.Reason = fmt.Sprintf("epoch %d was released by its owner %q", o.Epoch, cur.Owner)
	case cur.Owner != clientID:
		fe.Reason = fmt.Sprintf("epoch %d belongs to owner %q, not to client %q", o.Epoch, cur.Owner, clientID)
	default:
		return nil
	}
	return fe
}

// Claims returns the claims recorded for group, ordered by topic and
// partition.
func (f *FSM) Claims(group string) ([]Claim, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	return claimsIn(f.db, group)
}

// claimsIn reads group's claims from r.
func claimsIn(r pebble.Reader, group string) ([]Claim, error) {
	p := claimGroupPrefix(group)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, fmt.Errorf("fsm: claims: %w", err)
	}
	var out []Claim
	for ok := it.First(); ok; ok = it.Next() {
		topic, rest, err := readComponent(it.Key()[len(p):])
		if err != nil || len(rest) != 4 {
			it.Close()
			return nil, fmt.Errorf("%w: claim key %x", ErrCorrupt, it.Key())
		}
		c, err := decodeClaim(group, string(topic), int32(binary.BigEndian.Uint32(rest)), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, c)
	}
	return out, it.Close()
}
