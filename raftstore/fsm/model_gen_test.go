package fsm

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/statedhq/stated/raftstore/command"
)

// The pools the generator draws from are small, so that commands collide:
// keys that are prefixes of each other or hold 0x00, namespaces that are
// prefixes of each other, client ids that reuse sessions, partitions that
// several owners claim.
var (
	genNamespaces = []string{"a", "b", "a\x00"}
	genKeys       = []string{"", "k", "k0", "k1", "k\x00", "k\x001", "kk", "x"}
	genSubs       = []string{"", "s", "s0", "s\x00"}
	genClients    = []string{"p", "q", "r\x00", "rr"}
	genLegacy     = []string{"L1", "L2"}
	genGroups     = []string{"g", "h"}
	genTopics     = []string{"t", "u"}
	genIdle       = []int64{int64(time.Second), int64(3 * time.Second), int64(10 * time.Second), int64(time.Hour), math.MaxInt64}
)

// gen draws a random command log. It reads the model to aim its commands
// (the current session of a client, the epoch of a claim, the stored
// offset) so that accepted, refused and duplicate commands all occur, but
// it never decides an outcome: the model does.
type gen struct {
	r   *rand.Rand
	m   *model
	now int64

	nextID  uint64
	opened  map[string][]uint64 // every session id each client opened
	sent    map[genLane]*command.Commit
	applied map[genLane]*command.Commit
	legacy  []*command.Commit
	refs    []command.SessionRef // an earlier listing of idle sessions

	barriers map[int]bool // steps that are checkpoint barriers
	pending  *genLane     // the lane of the session commit being applied
	pendingC *command.Commit
}

type genLane struct {
	client  string
	session uint64
	lane    uint32
}

func newGen(seed uint64, m *model, steps int) *gen {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &gen{r: r, m: m, now: 1_700_000_000_000_000_000, nextID: 1000,
		opened: map[string][]uint64{}, sent: map[genLane]*command.Commit{},
		applied: map[genLane]*command.Commit{}, barriers: map[int]bool{}}
	// A few barriers per run: each makes a local Pebble checkpoint.
	for range 3 {
		g.barriers[1+r.IntN(steps)] = true
	}
	return g
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// tick moves the leader's clock: mostly forward by a little, sometimes by
// more than an idle timeout or the legacy dedup window, rarely back (a new
// leader whose clock is behind).
func (g *gen) tick() {
	switch x := g.r.IntN(100); {
	case x < 4:
		g.toDeadline()
	case x < 7:
	case x < 75:
		g.now += g.r.Int64N(int64(300 * time.Millisecond))
	case x < 95:
		g.now += g.r.Int64N(int64(3 * time.Second))
	case x < 97:
		g.now += g.r.Int64N(int64(2 * time.Hour))
	case x < 98:
		// Past the retention of ended sessions' records (a day at
		// least), so that sweeps delete some.
		g.now += int64(24*time.Hour) + g.r.Int64N(int64(4*time.Hour))
	default:
		g.now -= g.r.Int64N(int64(time.Second))
	}
}

// toDeadline moves the clock to a deadline the model holds, or just past
// it: a session's idle timeout, an entry's expiry, a legacy retry
// record's window. Boundaries are where off-by-one errors hide.
func (g *gen) toDeadline() {
	var ds []int64
	for _, s := range g.m.sessions {
		if s.lastActive <= math.MaxInt64-s.idle {
			ds = append(ds, s.lastActive+s.idle)
		}
	}
	for _, e := range g.m.entries {
		ds = append(ds, e.exp)
	}
	for _, d := range g.m.dedup {
		ds = append(ds, d.exp)
	}
	for _, e := range g.m.ended {
		ds = append(ds, e.exp)
	}
	ds = slices.DeleteFunc(ds, func(d int64) bool { return d < g.now || d > g.now+int64(2*time.Hour) })
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds) // map order must not decide: a seed replays the same log
	g.now = pick(g.r, ds) + g.r.Int64N(2)
}

// next returns the encoded command of step.
func (g *gen) next(step int) []byte {
	g.tick()
	g.pending, g.pendingC = nil, nil
	if g.barriers[step] {
		return command.Encode(nil, &command.Command{Type: command.TypeCheckpoint, Now: g.now})
	}
	cmd := &command.Command{Now: g.now}
	switch x := g.r.IntN(1000); {
	case x < 450:
		return command.Encode(nil, g.sessionCommit())
	case x < 570:
		// A commit without a session, with or without a client id.
		cmd.Type = command.TypeCommit
		client := pick(g.r, append(genClients, ""))
		muts, offs := g.payload(client)
		cmd.Commit = &command.Commit{ClientID: client, Mutations: muts, Offsets: offs}
	case x < 620:
		return command.EncodeVersion2(g.legacyCommit())
	case x < 635:
		// A sequence without a session.
		cmd.Type = command.TypeCommit
		muts, offs := g.payload("p")
		cmd.Commit = &command.Commit{ClientID: pick(g.r, genClients), Seq: 1 + g.r.Uint64N(3), Mutations: muts, Offsets: offs}
	case x < 700:
		cmd = g.openSession(pick(g.r, genClients))
	case x < 740:
		cmd.Type = command.TypeExpireSessions
		cmd.Expired = g.sweep()
	case x < 800:
		cmd.Type = command.TypeExpire
		cmd.ExpireLimit = pick(g.r, []uint32{0, 1, 2, 3, 10, 1000})
	case x < 860:
		cmd.Type = command.TypeClaim
		cmd.Claim = g.claim()
	case x < 900:
		cmd.Type = command.TypeRelease
		cmd.Claim = g.release()
	case x < 915:
		cmd.Type = command.TypeCheckpointDone
		g.checkpointDone(cmd)
	case x < 925:
		g.metadata(cmd)
	case x < 932:
		return g.corrupt()
	default:
		return command.Encode(nil, g.sessionCommit())
	}
	return command.Encode(nil, cmd)
}

// observe tells the generator what the model made of the step, so that
// later retries can repeat a commit that was applied.
func (g *gen) observe(res mResult) {
	if g.pending != nil && res.err == nil && !res.dup {
		g.applied[*g.pending] = g.pendingC
	}
}

func (g *gen) openSession(client string) *command.Command {
	g.nextID++
	s := &command.Session{ClientID: client, ID: g.nextID, IdleTimeout: pick(g.r, genIdle)}
	switch x := g.r.IntN(100); {
	case x < 1:
		s.ClientID = ""
	case x < 2:
		s.ID = 0
	case x < 3:
		s.IdleTimeout = -g.r.Int64N(2)
	case x < 5:
		// The same session opened again: a retry of its open, applied
		// after it.
		if cur, ok := g.m.sessions[client]; ok {
			s.ID = cur.id
		}
	case x < 20:
		// A late attempt of an earlier open of the client: its session
		// may be current, expired, replaced, or ended long ago.
		if ids := g.opened[client]; len(ids) > 0 {
			s.ID = pick(g.r, ids)
		}
	}
	g.opened[client] = append(g.opened[client], s.ID)
	return &command.Command{Type: command.TypeOpenSession, Now: g.now, Session: s}
}

// sessionCommit is a commit of a client in a session: the next sequence
// of a lane, a retry of the lane's last commit (same payload or another),
// a stale sequence, a gap, or a zombie's commit in a superseded session.
func (g *gen) sessionCommit() *command.Command {
	client := pick(g.r, genClients)
	cur, has := g.m.sessions[client]
	if !has && len(g.opened[client]) == 0 || has && cur.expired(g.now) && g.r.IntN(100) < 85 {
		return g.openSession(client)
	}
	sid := cur.id
	switch x := g.r.IntN(100); {
	case x < 80 && has:
	case x < 93 && len(g.opened[client]) > 0:
		sid = pick(g.r, g.opened[client])
	default:
		sid = 900 + g.r.Uint64N(5) // never opened
	}
	lk := genLane{client, sid, uint32(g.r.IntN(3))}
	var highest uint64
	if s := g.sent[lk]; s != nil {
		highest = s.Seq
	}
	var applied uint64 // the lane's highest applied sequence
	if l, ok := g.m.lanes[mLaneID{client, lk.lane}]; ok && l.session == sid {
		applied = l.seq
	}
	c := &command.Commit{ClientID: client, SessionID: sid, Lane: lk.lane}
	fresh := func() { c.Mutations, c.Offsets = g.payload(client) }
	switch x := g.r.IntN(100); {
	case x < 12 && g.applied[lk] != nil:
		*c = *g.applied[lk] // a retry of the last commit applied
	case x < 18 && g.sent[lk] != nil:
		*c = *g.sent[lk] // a retry of the last commit sent
	case x < 26 && highest > 0:
		c.Seq = highest // the same sequence with another payload
		fresh()
	case x < 36 && applied > 1:
		c.Seq = 1 + g.r.Uint64N(applied-1) // below the lane's highest
		fresh()
	case x < 44:
		c.Seq = highest + 2 + g.r.Uint64N(4)
		fresh()
	case x < 46:
		c.Seq = 0
		fresh()
	default:
		c.Seq = highest + 1
		fresh()
	}
	if c.Hash == ([16]byte{}) {
		c.Hash = c.PayloadHash()
	}
	if c.Seq >= highest {
		g.sent[lk] = c
	}
	g.pending, g.pendingC = &lk, c
	return &command.Command{Type: command.TypeCommit, Now: g.now, Commit: c}
}

// legacyCommit is a format version 2 commit with a (client id, sequence),
// often one seen before.
func (g *gen) legacyCommit() *command.Command {
	c := &command.Commit{ClientID: pick(g.r, genLegacy), Seq: 1 + g.r.Uint64N(6)}
	if g.r.IntN(100) < 4 {
		c.ClientID = "" // a sequence without a client id
	}
	c.Mutations, c.Offsets = g.payload(c.ClientID)
	switch x := g.r.IntN(100); {
	case x < 30 && len(g.legacy) > 0:
		c = pick(g.r, g.legacy)
	case x < 45:
		// A retry at the edge of its record's window.
		ids := slices.SortedFunc(maps.Keys(g.m.dedup), func(a, b mDedupID) int {
			return cmp.Or(cmp.Compare(a.client, b.client), cmp.Compare(a.seq, b.seq))
		})
		for _, id := range ids {
			if exp := g.m.dedup[id].exp; exp > g.now {
				g.now = exp - 1 + g.r.Int64N(3)
				c.ClientID, c.Seq = id.client, id.seq
				break
			}
		}
	}
	g.legacy = append(g.legacy, c)
	return &command.Command{Type: command.TypeCommit, Now: g.now, Commit: c}
}

func (g *gen) payload(client string) ([]command.Mutation, []command.Offset) {
	var muts []command.Mutation
	n := g.r.IntN(4)
	if g.r.IntN(16) == 0 {
		// Past groupMaxOps: applied with others, it goes in a Pebble
		// batch of its own.
		n = groupMaxOps + 1 + g.r.IntN(8)
	}
	for range n {
		muts = append(muts, g.mutation())
	}
	var offs []command.Offset
	if g.r.IntN(100) < 35 {
		for range 1 + g.r.IntN(2) {
			offs = append(offs, g.offset(client))
		}
	}
	return muts, offs
}

func (g *gen) mutation() command.Mutation {
	r := g.r
	m := command.Mutation{Namespace: pick(r, genNamespaces), Key: []byte(pick(r, genKeys))}
	switch x := r.IntN(100); {
	case x < 22:
		m.Op = command.OpPut
	case x < 30:
		m.Op = command.OpDelete
	case x < 44:
		m.Op = command.OpMapPut
	case x < 51:
		m.Op = command.OpMapDelete
	case x < 63:
		m.Op = command.OpListAppend
	case x < 92:
		m.Op = command.OpCounterAdd
	case x < 98:
		m.Op = command.OpDeletePrefix
		m.Key = m.Key[:r.IntN(len(m.Key)+1)]
	default:
		m.Op = pick(r, []command.Op{0, 8, 200})
	}
	switch m.Op {
	case command.OpMapPut, command.OpMapDelete:
		m.SubKey = []byte(pick(r, genSubs))
	case command.OpCounterAdd:
		switch x := r.IntN(100); {
		case x < 4:
			m.Delta = math.MaxInt64 - r.Int64N(100)
		case x < 8:
			m.Delta = math.MinInt64 + r.Int64N(100)
		default:
			m.Delta = r.Int64N(101) - 50
		}
	}
	if m.Op == command.OpPut || m.Op == command.OpMapPut || m.Op == command.OpListAppend {
		m.Value = []byte(fmt.Sprint(r.IntN(1000)))
		if r.IntN(10) == 0 {
			m.Value = nil
		}
	}
	switch x := r.IntN(100); {
	case x < 30:
		m.TTL = 1 + r.Int64N(int64(3*time.Second))
	case x < 31:
		m.TTL = math.MaxInt64 - r.Int64N(1000) // expiry overflows
	case x < 33:
		m.TTL = -r.Int64N(1000) // no expiry
	}
	return m
}

// offset moves a partition's offset, aimed at the model's claims: the
// current epoch, a superseded one, one from the future, none; forward
// mostly, backwards sometimes.
func (g *gen) offset(client string) command.Offset {
	r := g.r
	p := mPart{pick(r, genGroups), pick(r, genTopics), int32(r.IntN(3))}
	if r.IntN(40) == 0 {
		p.partition = -1
	}
	if r.IntN(100) < 60 {
		// A partition the client holds, if any: the first in the model's
		// order, so that the choice does not depend on map iteration.
		for _, q := range slices.SortedFunc(maps.Keys(g.m.claims), cmpPart) {
			if c := g.m.claims[q]; c.owner == client && !c.released {
				p = q
				break
			}
		}
	}
	o := command.Offset{Group: p.group, Topic: p.topic, Partition: p.partition}
	if cl, ok := g.m.claims[p]; ok {
		switch x := r.IntN(100); {
		case x < 70:
			o.Epoch = cl.epoch
		case x < 76:
			o.Epoch = cl.epoch - 1
		case x < 78:
			o.Epoch = cl.epoch + 1
		case x < 90:
		default:
			o.Epoch = r.Uint64N(cl.epoch + 3)
		}
	} else if r.IntN(100) < 15 {
		o.Epoch = 1 + r.Uint64N(3)
	}
	o.Offset = g.m.offsets[p] + r.Int64N(4)
	if r.IntN(100) < 20 {
		o.Offset = g.m.offsets[p] - 1 - r.Int64N(3)
	}
	return o
}

func (g *gen) claim() *command.Claim {
	c := &command.Claim{Group: pick(g.r, genGroups), Owner: pick(g.r, append(genClients, "other"))}
	if g.r.IntN(40) == 0 {
		c.Owner = ""
	}
	for range 1 + g.r.IntN(2) {
		c.Partitions = append(c.Partitions, command.PartitionEpoch{Topic: pick(g.r, genTopics), Partition: int32(g.r.IntN(3))})
	}
	return c
}

func (g *gen) release() *command.Claim {
	c := g.claim()
	for i := range c.Partitions {
		pe := &c.Partitions[i]
		if cl, ok := g.m.claims[mPart{c.Group, pe.Topic, pe.Partition}]; ok && g.r.IntN(100) < 70 {
			pe.Epoch = cl.epoch
			if g.r.IntN(100) < 60 {
				c.Owner = cl.owner
			}
		} else {
			pe.Epoch = g.r.Uint64N(4)
		}
	}
	return c
}

// sweep lists idle sessions as a leader does, sometimes from an earlier
// listing that commits or a new session made stale since, sometimes made
// up.
func (g *gen) sweep() []command.SessionRef {
	// The leader lists at its own time, which may be ahead of the time of
	// entries still to apply; a listing can also wait for a later sweep.
	at := g.now
	if g.r.IntN(2) == 0 {
		at += g.r.Int64N(int64(5 * time.Second))
	}
	listing := g.m.idleSessions(at, 1+g.r.IntN(4))
	switch x := g.r.IntN(100); {
	case x < 55:
		g.refs = listing
		return listing
	case x < 85:
		refs := g.refs
		g.refs = listing
		return refs
	default:
		return []command.SessionRef{{ClientID: pick(g.r, genClients), ID: pick(g.r, []uint64{0, 900, g.nextID}), LastActive: g.now - g.r.Int64N(int64(time.Hour))}}
	}
}

func (g *gen) checkpointDone(cmd *command.Command) {
	switch x := g.r.IntN(100); {
	case x < 60:
		cmd.Epoch = g.m.lastEpoch
	case x < 80:
		cmd.Epoch = g.r.Uint64N(g.m.lastEpoch + 1)
	default:
		cmd.Epoch = g.m.lastEpoch + 1
	}
	for _, grp := range genGroups {
		cmd.Offsets = append(cmd.Offsets, g.m.offsetsOf(g.m.offsets, grp)...)
	}
	if g.r.IntN(4) == 0 {
		cmd.Offsets = append(cmd.Offsets, command.Offset{Group: "g", Topic: "v", Partition: 7, Offset: g.r.Int64N(100)})
	}
}

func (g *gen) metadata(cmd *command.Command) {
	switch g.r.IntN(3) {
	case 0:
		cmd.Type = command.TypeSetClusterID
		cmd.ClusterID = pick(g.r, []string{"c1", "c2", ""})
	case 1:
		cmd.Type = command.TypeSetMember
		cmd.Member = &command.Member{ID: pick(g.r, []string{"n1", "n2", ""}), RaftAddr: fmt.Sprint("r", g.r.IntN(3)), GRPCAddr: fmt.Sprint("g", g.r.IntN(3))}
	default:
		cmd.Type = command.TypeRemoveMember
		cmd.Member = &command.Member{ID: pick(g.r, []string{"n1", "n2", ""})}
	}
}

// corrupt returns bytes that do not decode: a command cut short, an
// unknown type, an unknown format version.
func (g *gen) corrupt() []byte {
	muts, offs := g.payload("p")
	b := command.Encode(nil, &command.Command{Type: command.TypeCommit, Now: g.now, Commit: &command.Commit{Mutations: muts, Offsets: offs}})
	switch g.r.IntN(3) {
	case 0:
		return b[:len(b)-1]
	case 1:
		b[1] = 99
	default:
		b[0] = 9
	}
	return b
}
