package command

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sampleCommit() *Command {
	return &Command{
		Type: TypeCommit,
		Now:  1_700_000_000_123_456_789,
		Commit: &Commit{
			ClientID: "client-1",
			Seq:      42,
			Mutations: []Mutation{
				{Op: OpPut, Namespace: "ns", Key: []byte("k"), Value: []byte("v"), TTL: 99},
				{Op: OpMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s\x00"), Value: []byte{}},
				{Op: OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: -7},
				{Op: OpDeletePrefix, Namespace: "ns"},
			},
			Offsets: []Offset{{Group: "g", Topic: "t", Partition: 3, Offset: 1 << 40}},
		},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for name, c := range map[string]*Command{
		"commit":        sampleCommit(),
		"empty commit":  {Type: TypeCommit, Commit: &Commit{}},
		"expire":        {Type: TypeExpire, Now: 5, ExpireLimit: 1000},
		"cluster id":    {Type: TypeSetClusterID, ClusterID: "c1"},
		"set member":    {Type: TypeSetMember, Member: &Member{ID: "n1", RaftAddr: "127.0.0.1:1", GRPCAddr: "127.0.0.1:2", Incarnation: "5f0c"}},
		"remove member": {Type: TypeRemoveMember, Member: &Member{ID: "n1"}},
		"claim": {Type: TypeClaim, Now: 7, Claim: &Claim{Group: "g", Owner: "c1", Partitions: []PartitionEpoch{
			{Topic: "t", Partition: 0}, {Topic: "t", Partition: 1 << 30},
		}}},
		"checkpoint":        {Type: TypeCheckpoint, Now: 9},
		"changelog barrier": {Type: TypeCheckpoint, Now: 9, Changelog: true},
		"checkpoint done":   {Type: TypeCheckpointDone, Now: 9, Epoch: 1 << 40, Offsets: []Offset{{Group: "g", Topic: "t", Partition: 3, Offset: 77}}},
		"session commit": {Type: TypeCommit, Now: 3, Commit: &Commit{ClientID: "c", SessionID: 1 << 62, Lane: 9, Seq: 5,
			Hash: [16]byte{1, 2, 3}, Mutations: []Mutation{{Op: OpPut, Namespace: "ns", Key: []byte("k")}}}},
		"open session":    {Type: TypeOpenSession, Now: 4, Session: &Session{ClientID: "c", ID: 77, IdleTimeout: 3600e9}},
		"expire sessions": {Type: TypeExpireSessions, Now: 4, Expired: []SessionRef{{ClientID: "a", ID: 1, LastActive: 2}, {ClientID: "b", ID: 3, LastActive: 4}}},
		"define windows": {Type: TypeDefineWindows, Now: 5, Windows: &WindowSpec{Namespace: "clicks", Shape: ShapeHopping,
			SizeMs: 300_000, AdvanceMs: 60_000, GraceMs: 10_000, MaxOutOfOrderMs: 5_000, RetentionMs: 1 << 40, IdleTimeoutMs: 30_000,
			Aggregate: AggList, MaxListValues: 100, Emit: EmitUpdates, Late: LateReturn, MaxPendingEmissions: 7}},
		"window tick": {Type: TypeWindowTick, Now: 6},
		"commit batch": {Type: TypeCommitBatch, Now: 8, Batch: []*Commit{
			sampleCommit().Commit,
			{},
			{ClientID: "c", SessionID: 5, Lane: 2, Seq: 9, Hash: [16]byte{7}, Mutations: []Mutation{{Op: OpCounterAdd, Namespace: "ns", Key: []byte("k"), Delta: -3}},
				WindowAdds: []WindowAdd{{Namespace: "clicks", Key: []byte("u"), EventTimeMs: 5, Int: 1}}},
		}},
		"empty commit batch": {Type: TypeCommitBatch, Now: 8},
		"window commit": {Type: TypeCommit, Now: 3, Commit: &Commit{ClientID: "c", SessionID: 5, Lane: 1, Seq: 2, Hash: [16]byte{9},
			WindowAdds: []WindowAdd{
				{Namespace: "clicks", Source: "t/3", Key: []byte("u\x00"), EventTimeMs: MaxEventTime, Int: -1, Float: -0.5, Bytes: []byte("v")},
				{Namespace: "clicks", EventTimeMs: 0},
			},
			WatermarkHints: []WatermarkHint{{Namespace: "clicks", Source: "t/3", TimeMs: 12}},
			Acks:           []EmissionAck{{Namespace: "clicks", ID: 1 << 60}},
			Timers:         []TimerOp{{Namespace: "clicks", Key: []byte("u"), TimeMs: 99}, {Namespace: "x", TimeMs: 1, Delete: true}},
		}},
		"release": {Type: TypeRelease, Claim: &Claim{Group: "g", Owner: "c1", Partitions: []PartitionEpoch{
			{Topic: "t", Partition: 2, Epoch: 1 << 50},
		}}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Decode(Encode(nil, c))
			if err != nil {
				t.Fatal(err)
			}
			// Empty and nil byte slices encode alike; compare re-encodings.
			if a, b := Encode(nil, got), Encode(nil, c); !reflect.DeepEqual(a, b) || got.Changelog != c.Changelog {
				t.Fatalf("round trip changed the command:\n got %+v\nwant %+v", got, c)
			}
		})
	}
}

// TestOnlyAMemberWithAnIncarnationIsWrittenInVersion5: a command is
// written in the oldest version that holds it, so a node of the previous
// release (version 4) decodes everything but a joining member's record; a
// version 5 encoding of any command decodes as its version 4 one does.
func TestOnlyAMemberWithAnIncarnationIsWrittenInVersion5(t *testing.T) {
	m := &Command{Type: TypeSetMember, Member: &Member{ID: "n1", RaftAddr: "127.0.0.1:1", GRPCAddr: "127.0.0.1:2"}}
	joining := &Command{Type: TypeSetMember, Member: &Member{ID: "n1", RaftAddr: "127.0.0.1:1", GRPCAddr: "127.0.0.1:2", Incarnation: "5f0c"}}
	for _, tc := range []struct {
		name    string
		c       *Command
		version byte
	}{
		{"member", m, versionV4},
		{"member with an incarnation", joining, versionV5},
		{"commit batch", &Command{Type: TypeCommitBatch, Batch: []*Commit{sampleCommit().Commit}}, versionV5},
		{"commit", sampleCommit(), versionV4},
		{"window commit", &Command{Type: TypeCommit, Commit: &Commit{ClientID: "c", WindowAdds: []WindowAdd{{Namespace: "clicks", Key: []byte("u"), EventTimeMs: 5, Int: 1}}}}, versionV4},
	} {
		buf := Encode(nil, tc.c)
		if buf[0] != tc.version {
			t.Errorf("%s: written in version %d, want %d", tc.name, buf[0], tc.version)
		}
		got, err := Decode(buf)
		if err != nil || got.Version != tc.version || !reflect.DeepEqual(Encode(nil, got), buf) {
			t.Errorf("%s: decoded %+v, %v", tc.name, got, err)
		}
	}
	// A version 5 encoding of a member without an incarnation (one empty
	// field more) decodes as the version 4 one.
	v4 := Encode(nil, m)
	v5 := append(append([]byte{versionV5}, v4[1:]...), 0)
	got, err := Decode(v5)
	if err != nil || *got.Member != *m.Member {
		t.Fatalf("version 5 member without an incarnation = %+v, %v; want %+v", got, err, m.Member)
	}
	if _, err := Decode(append(v4, 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 4 member with a field more: err = %v, want ErrCorrupt", err)
	}
	batch := Encode(nil, &Command{Type: TypeCommitBatch, Batch: []*Commit{sampleCommit().Commit}})
	batch[0] = versionV4
	if _, err := Decode(batch); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("commit batch in version 4: err = %v, want ErrCorrupt", err)
	}
	batch[0] = versionV5
	for n := range len(batch) {
		if _, err := Decode(batch[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode of %d/%d bytes of a commit batch: err = %v, want ErrCorrupt", n, len(batch), err)
		}
	}
}

// TestOnlyAChangelogBarrierIsWrittenInVersion6: a plain barrier keeps its
// version 4 bytes, which a release before changelog checkpoints decodes;
// a changelog barrier carries its flag in version 6, and every older
// barrier, and a version 6 one without the flag, decodes as a plain one.
func TestOnlyAChangelogBarrierIsWrittenInVersion6(t *testing.T) {
	const now = 1_700_000_000_000_000_000
	plain := Encode(nil, &Command{Type: TypeCheckpoint, Now: now})
	if want := binary.AppendVarint([]byte{versionV4, byte(TypeCheckpoint)}, now); !bytes.Equal(plain, want) {
		t.Fatalf("plain barrier encodes as %x, want the version 4 bytes %x", plain, want)
	}
	changelog := Encode(nil, &Command{Type: TypeCheckpoint, Now: now, Changelog: true})
	if want := binary.AppendUvarint(binary.AppendVarint([]byte{version, byte(TypeCheckpoint)}, now), 1); !bytes.Equal(changelog, want) {
		t.Fatalf("changelog barrier encodes as %x, want %x", changelog, want)
	}
	for _, tc := range []struct {
		name      string
		buf       []byte
		changelog bool
	}{
		{"changelog barrier", changelog, true},
		{"version 6 barrier without flags", binary.AppendUvarint(binary.AppendVarint([]byte{version, byte(TypeCheckpoint)}, now), 0), false},
		{"version 5 barrier", append([]byte{versionV5}, plain[1:]...), false},
		{"version 4 barrier", plain, false},
		{"version 3 barrier", append([]byte{versionV3}, plain[1:]...), false},
		{"version 2 barrier", append([]byte{versionV2}, plain[1:]...), false},
	} {
		got, err := Decode(tc.buf)
		if err != nil || got.Type != TypeCheckpoint || got.Now != now || got.Changelog != tc.changelog || got.Version != tc.buf[0] {
			t.Errorf("%s: decoded %+v, %v; want a barrier at %d with Changelog %v", tc.name, got, err, int64(now), tc.changelog)
		}
	}
	if _, err := Decode(append([]byte{versionV1}, plain[1:]...)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("version 1 barrier: err = %v, want ErrCorrupt", err)
	}
	// Flags a later release may add are refused, never ignored.
	for _, flags := range []uint64{2, 3, 1 << 40} {
		buf := binary.AppendUvarint(binary.AppendVarint([]byte{version, byte(TypeCheckpoint)}, now), flags)
		if _, err := Decode(buf); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "flags") {
			t.Errorf("barrier with flags %#x: err = %v, want ErrCorrupt naming the flags", flags, err)
		}
	}
	for n := range len(changelog) {
		if _, err := Decode(changelog[:n]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode of %d/%d bytes of a changelog barrier: err = %v, want ErrCorrupt", n, len(changelog), err)
		}
	}
}

func TestDecodeRejectsEveryTruncation(t *testing.T) {
	buf := Encode(nil, sampleCommit())
	for n := 0; n < len(buf); n++ {
		if _, err := Decode(buf[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode of %d/%d bytes: err = %v, want ErrCorrupt", n, len(buf), err)
		}
	}
}

func TestDecodeRejectsUnknownVersionAndType(t *testing.T) {
	buf := Encode(nil, sampleCommit())
	bad := append([]byte{}, buf...)
	bad[0] = 9
	if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown version: err = %v", err)
	}
	bad = append([]byte{}, buf...)
	bad[1] = 77
	if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown type: err = %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(nil, sampleCommit()))
	f.Fuzz(func(t *testing.T, buf []byte) {
		c, err := Decode(buf)
		if err != nil {
			return
		}
		if _, err := Decode(Encode(nil, c)); err != nil {
			t.Fatalf("re-encoding a decoded command does not decode: %v", err)
		}
	})
}

// TestDecodeVersion1 keeps decoding logs written before offsets carried
// epochs: a version 1 commit decodes with zero epochs; and logs written
// before sessions: a version 2 commit decodes with no session.
func TestDecodeVersion1(t *testing.T) {
	c := sampleCommit()
	c.Commit.Offsets[0].Epoch = 0
	c.Commit.SessionID, c.Commit.Lane, c.Commit.Hash = 0, 0, [16]byte{}
	v2 := EncodeVersion2(c)
	// Version 2 appends the epoch (one zero byte here) after each offset;
	// version 1 ends at the offset itself.
	v1 := append([]byte{versionV1}, v2[1:len(v2)-1]...)
	for _, tc := range []struct {
		name    string
		buf     []byte
		version byte
	}{{"v1", v1, versionV1}, {"v2", v2, versionV2}} {
		got, err := Decode(tc.buf)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got.Version != tc.version || !reflect.DeepEqual(Encode(nil, got), Encode(nil, c)) {
			t.Fatalf("%s decode = version %d %+v, want %d %+v", tc.name, got.Version, got.Commit, tc.version, c.Commit)
		}
	}
	for _, typ := range []Type{TypeOpenSession, TypeExpireSessions} {
		buf := Encode(nil, &Command{Type: typ, Session: &Session{ClientID: "c", ID: 1}})
		buf[0] = versionV2
		if _, err := Decode(buf); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("type %d in version 2: err = %v, want ErrCorrupt", typ, err)
		}
	}
	claim := Encode(nil, &Command{Type: TypeClaim, Claim: &Claim{Group: "g"}})
	claim[0] = versionV1
	if _, err := Decode(claim); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("claim in version 1: err = %v, want ErrCorrupt", err)
	}
}

func TestPayloadHashIgnoresIdentityAndSeesEveryChange(t *testing.T) {
	a := sampleCommit().Commit
	b := sampleCommit().Commit
	b.ClientID, b.Seq, b.SessionID, b.Lane = "other", 99, 5, 3
	if a.PayloadHash() != b.PayloadHash() {
		t.Fatal("identity changed the payload hash")
	}
	for name, change := range map[string]func(c *Commit){
		"value":  func(c *Commit) { c.Mutations[0].Value = []byte("w") },
		"delta":  func(c *Commit) { c.Mutations[2].Delta++ },
		"ttl":    func(c *Commit) { c.Mutations[0].TTL++ },
		"offset": func(c *Commit) { c.Offsets[0].Offset++ },
		"epoch":  func(c *Commit) { c.Offsets[0].Epoch++ },
		"order":  func(c *Commit) { c.Mutations[0], c.Mutations[1] = c.Mutations[1], c.Mutations[0] },
		"fewer":  func(c *Commit) { c.Mutations = c.Mutations[:3] },
	} {
		c := sampleCommit().Commit
		change(c)
		if c.PayloadHash() == a.PayloadHash() {
			t.Errorf("%s: changed commit has the same payload hash", name)
		}
	}
}

func TestPayloadHashOfACommitWithoutWindowPartsIsThatOfVersion3(t *testing.T) {
	c := sampleCommit().Commit
	h := c.PayloadHash()
	c.WatermarkHints = []WatermarkHint{{Namespace: "w", TimeMs: 1}}
	if c.PayloadHash() == h {
		t.Fatal("a watermark hint does not change the payload hash")
	}
	c.WatermarkHints = nil
	if c.PayloadHash() != h {
		t.Fatal("the hash of a commit without window parts changed")
	}
}

func TestValidateWindowSpecNamesTheField(t *testing.T) {
	ok := WindowSpec{Namespace: "w", Shape: ShapeTumbling, SizeMs: 60_000, Aggregate: AggCount, Emit: EmitFinal, Late: LateDrop}
	if err := ValidateWindowSpec(&ok); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*WindowSpec)
	}{
		{"namespace", func(s *WindowSpec) { s.Namespace = "" }},
		{"size_ms", func(s *WindowSpec) { s.SizeMs = 0 }},
		{"size_ms", func(s *WindowSpec) { s.SizeMs = -5 }},
		{"gap_ms", func(s *WindowSpec) { s.Shape = ShapeSession }},
		{"advance_ms", func(s *WindowSpec) { s.Shape = ShapeHopping; s.AdvanceMs = 120_000 }},
		{"grace_ms", func(s *WindowSpec) { s.GraceMs = -1 }},
		{"max_out_of_order_ms", func(s *WindowSpec) { s.MaxOutOfOrderMs = -1 }},
		{"retention_ms", func(s *WindowSpec) { s.GraceMs = 10_000; s.RetentionMs = 65_000 }},
		{"aggregate", func(s *WindowSpec) { s.Aggregate = 99 }},
		{"aggregate", func(s *WindowSpec) { s.Shape = ShapeHopping; s.AdvanceMs = 1000; s.Aggregate = AggOpaque }},
		{"max_list_values", func(s *WindowSpec) { s.Aggregate = AggList }},
		{"max_list_values", func(s *WindowSpec) { s.MaxListValues = 3 }},
		{"emit", func(s *WindowSpec) { s.Emit = 0 }},
		{"late", func(s *WindowSpec) { s.Late = 9 }},
		{"idle_timeout_ms", func(s *WindowSpec) { s.IdleTimeoutMs = MaxDuration + 1 }},
	} {
		s := ok
		tc.edit(&s)
		err := ValidateWindowSpec(&s)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("spec %+v: error %v, want one naming %s", s, err, tc.field)
		}
	}
	if f, _, _ := DiffWindowSpecs(ok, ok.WithDefaults()); f != "" {
		t.Errorf("a spec and the same spec with its defaults differ in %s", f)
	}
	other := ok
	other.GraceMs = 5
	if f, was, now := DiffWindowSpecs(ok, other); f != "grace_ms" || was != "0" || now != "5" {
		t.Errorf("diff = %s %s %s, want grace_ms 0 5", f, was, now)
	}
	other = ok
	other.Aggregate = AggSumFloat
	if f, was, now := DiffWindowSpecs(ok, other); f != "aggregate" || was != "count" || now != "sum-float" {
		t.Errorf("diff = %s %s %s, want aggregate count sum-float: enums print by name", f, was, now)
	}
}

// EncodeProposal hashes each session commit's payload as it encodes it:
// the hash must be PayloadHash's (a retry hashed by a leader of another
// release must match), in the encoding and in the commit, for a commit
// alone and in a batch, with and without window parts; a commit without
// a session gets none; and the rest of the encoding is Encode's.
func TestEncodeProposalHashesSessionCommitsAsPayloadHash(t *testing.T) {
	session := func(c *Commit) *Commit { c.SessionID, c.Lane = 1<<62, 9; return c }
	withWindows := session(sampleCommit().Commit)
	withWindows.WindowAdds = []WindowAdd{{Namespace: "w", Source: "s", Key: []byte("k"), EventTimeMs: 5, Int: 1}}
	withWindows.Acks = []EmissionAck{{Namespace: "w", ID: 3}}
	noSession := sampleCommit().Commit
	for name, cmd := range map[string]*Command{
		"commit":             {Type: TypeCommit, Now: 3, Commit: session(sampleCommit().Commit)},
		"commit with window": {Type: TypeCommit, Now: 3, Commit: withWindows},
		"empty commit":       {Type: TypeCommit, Now: 3, Commit: session(&Commit{ClientID: "c", Seq: 1})},
		"no session":         {Type: TypeCommit, Now: 3, Commit: noSession},
		"batch": {Type: TypeCommitBatch, Now: 3, Batch: []*Commit{
			session(sampleCommit().Commit), sampleCommit().Commit, withWindows,
		}},
	} {
		t.Run(name, func(t *testing.T) {
			commits := cmd.Batch
			if cmd.Commit != nil {
				commits = []*Commit{cmd.Commit}
			}
			want := make([][16]byte, len(commits))
			for i, c := range commits {
				c.Hash = [16]byte{0xAA} // stale: EncodeProposal must replace it
				if c.SessionID != 0 {
					want[i] = c.PayloadHash()
				} else {
					want[i] = c.Hash // not in the encoding, left as it is
				}
			}
			buf := EncodeProposal(cmd)
			for i, c := range commits {
				if c.Hash != want[i] {
					t.Fatalf("commit %d: Hash = %x, want %x", i, c.Hash, want[i])
				}
			}
			if plain := Encode(nil, cmd); !reflect.DeepEqual(plain, buf) {
				t.Fatalf("EncodeProposal and then Encode differ:\n%x\n%x", buf, plain)
			}
			got, err := Decode(buf)
			if err != nil {
				t.Fatal(err)
			}
			decoded := got.Batch
			if got.Commit != nil {
				decoded = []*Commit{got.Commit}
			}
			for i, c := range decoded {
				if c.SessionID != 0 && c.Hash != c.PayloadHash() {
					t.Fatalf("decoded commit %d: Hash %x, PayloadHash %x", i, c.Hash, c.PayloadHash())
				}
			}
		})
	}
}

// Mutations of one namespace decode to one string, and a change of
// namespace between them is kept.
func TestDecodeKeepsEachMutationsNamespace(t *testing.T) {
	c := &Commit{ClientID: "c", Seq: 1, Mutations: []Mutation{
		{Op: OpPut, Namespace: "a", Key: []byte("1")},
		{Op: OpPut, Namespace: "a", Key: []byte("2")},
		{Op: OpPut, Namespace: "", Key: []byte("3")},
		{Op: OpPut, Namespace: "b", Key: []byte("4")},
		{Op: OpPut, Namespace: "a", Key: []byte("5")},
	}}
	got, err := Decode(Encode(nil, &Command{Type: TypeCommit, Commit: c}))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range got.Commit.Mutations {
		if m.Namespace != c.Mutations[i].Namespace {
			t.Fatalf("mutation %d: namespace %q, want %q", i, m.Namespace, c.Mutations[i].Namespace)
		}
	}
	buf := Encode(nil, benchCommit(100))
	if allocs := testing.AllocsPerRun(100, func() { _, _ = Decode(buf) }); allocs > 5 {
		t.Fatalf("decoding a 100-put commit of one namespace took %.0f allocations; want the namespace allocated once", allocs)
	}
}

// The size hint covers what Encode writes, so that it allocates once.
func TestEncodeAllocatesOnce(t *testing.T) {
	for _, cmd := range []*Command{benchCommit(1), benchCommit(1000), sampleCommit()} {
		cmd.Commit.Mutations[0].Delta, cmd.Commit.Mutations[0].TTL = -1<<62, 1<<62
		if n := testing.AllocsPerRun(20, func() { Encode(nil, cmd) }); n != 1 {
			t.Fatalf("Encode allocated %.0f times, want 1", n)
		}
	}
}

// A hopping spec puts each record in size/advance windows, each of which
// an add may index within its entry: a new definition is refused beyond
// MaxWindowsPerRecord, naming advance_ms, while the state machine's own
// check (ValidateWindowSpec, run when a definition applies) still
// accepts it, as a replica of an older release does.
func TestANewHoppingSpecPuttingARecordInTooManyWindowsIsRefused(t *testing.T) {
	spec := func(size, advance int64) WindowSpec {
		return WindowSpec{Namespace: "w", Shape: ShapeHopping, SizeMs: size, AdvanceMs: advance, Aggregate: AggCount, Emit: EmitFinal, Late: LateDrop}
	}
	for _, s := range []WindowSpec{spec(10_000, 1), spec(86_400_000, 8_640), spec(60_000, 60_000), spec(10_000, 3), spec(20_000, 2)} {
		if err := ValidateNewWindowSpec(&s); err != nil {
			t.Errorf("size %d advance %d (%d windows per record) refused: %v", s.SizeMs, s.AdvanceMs, s.SizeMs/s.AdvanceMs, err)
		}
	}
	for _, s := range []WindowSpec{spec(10_001, 1), spec(86_400_000, 1), spec(MaxDuration, 1), spec(86_400_000, 8_639), spec(20_001, 2)} {
		err := ValidateNewWindowSpec(&s)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "advance_ms" || !strings.Contains(fe.Reason, "more than the maximum of 10000") {
			t.Errorf("size %d advance %d (%d windows per record): error %v, want one naming advance_ms and the maximum", s.SizeMs, s.AdvanceMs, s.SizeMs/s.AdvanceMs, err)
		}
		if err := ValidateWindowSpec(&s); err != nil {
			t.Errorf("size %d advance %d: refused when applied (%v): a log written by an older release must apply alike", s.SizeMs, s.AdvanceMs, err)
		}
	}
}
