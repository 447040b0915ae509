package command

import (
	"errors"
	"reflect"
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
		"set member":    {Type: TypeSetMember, Member: &Member{ID: "n1", RaftAddr: "127.0.0.1:1", GRPCAddr: "127.0.0.1:2"}},
		"remove member": {Type: TypeRemoveMember, Member: &Member{ID: "n1"}},
		"claim": {Type: TypeClaim, Now: 7, Claim: &Claim{Group: "g", Owner: "c1", Partitions: []PartitionEpoch{
			{Topic: "t", Partition: 0}, {Topic: "t", Partition: 1 << 30},
		}}},
		"checkpoint":      {Type: TypeCheckpoint, Now: 9},
		"checkpoint done": {Type: TypeCheckpointDone, Now: 9, Epoch: 1 << 40, Offsets: []Offset{{Group: "g", Topic: "t", Partition: 3, Offset: 77}}},
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
			if a, b := Encode(nil, got), Encode(nil, c); !reflect.DeepEqual(a, b) {
				t.Fatalf("round trip changed the command:\n got %+v\nwant %+v", got, c)
			}
		})
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
// epochs: a version 1 commit decodes with zero epochs.
func TestDecodeVersion1(t *testing.T) {
	c := sampleCommit()
	c.Commit.Offsets[0].Epoch = 0
	buf := Encode(nil, c)
	// Version 2 appends the epoch (one zero byte here) after each offset;
	// version 1 ends at the offset itself.
	v1 := append([]byte{versionV1}, buf[1:len(buf)-1]...)
	got, err := Decode(v1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(Encode(nil, got), buf) {
		t.Fatalf("version 1 decode = %+v, want %+v", got.Commit, c.Commit)
	}
	claim := Encode(nil, &Command{Type: TypeClaim, Claim: &Claim{Group: "g"}})
	claim[0] = versionV1
	if _, err := Decode(claim); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("claim in version 1: err = %v, want ErrCorrupt", err)
	}
}
