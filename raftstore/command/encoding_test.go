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
