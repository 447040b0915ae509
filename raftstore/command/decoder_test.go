package command

import (
	"reflect"
	"runtime"
	"testing"
)

// decoderCases are commands whose commits take a Decoder's memory in
// every way: none, a few, a batch whose commits outgrow it part-way, more
// than it keeps, and a smaller one after those.
func decoderCases() []*Command {
	many := func(n int, ns string) *Commit {
		c := benchCommit(n).Commit
		for i := range c.Mutations {
			c.Mutations[i].Namespace = ns
			c.Mutations[i].Delta = int64(i) - 3
		}
		return c
	}
	return []*Command{
		sampleCommit(),
		{Type: TypeExpire, Now: 5, ExpireLimit: 10},
		{Type: TypeCommit, Commit: &Commit{}},
		benchCommit(1000),
		{Type: TypeCommitBatch, Now: 8, Batch: []*Commit{many(3, "a"), {}, many(700, "b"), many(2500, "c"), many(1, "d"), many(5000, "e")}},
		benchCommit(maxKeptMutations + 1),
		{Type: TypeCommitBatch, Now: 9, Batch: []*Commit{many(maxKeptMutations, "f"), many(2, "g")}},
		sampleCommit(),
		benchCommit(10),
	}
}

// A Decoder decodes every command as Decode does, each while the ones
// before it decoded into the same memory, commits of one batch entry
// included when they outgrow it part-way.
func TestADecoderDecodesAsDecodeDoes(t *testing.T) {
	var dec Decoder
	for round := range 2 {
		for i, cmd := range decoderCases() {
			buf := Encode(nil, cmd)
			want, err := Decode(buf)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dec.Decode(buf)
			if err != nil {
				t.Fatalf("round %d, command %d: %v", round, i, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d, command %d: the Decoder's command differs from Decode's", round, i)
			}
		}
	}
	// A corrupt command is refused as Decode refuses it.
	buf := Encode(nil, benchCommit(100))
	for _, n := range []int{1, 10, len(buf) / 2, len(buf) - 1} {
		if _, err := dec.Decode(buf[:n]); err == nil {
			t.Fatalf("a command cut to %d of %d bytes decoded", n, len(buf))
		}
	}
}

// A command's mutations are cleared when the Decoder is done with them,
// so that it keeps no entry's bytes alive, and the next command's go into
// the same memory.
func TestADecoderReleasesAndReusesItsMemory(t *testing.T) {
	var dec Decoder
	first, err := dec.Decode(Encode(nil, benchCommit(300)))
	if err != nil {
		t.Fatal(err)
	}
	muts := first.Commit.Mutations
	dec.Release()
	for i := range muts {
		if !reflect.DeepEqual(muts[i], Mutation{}) {
			t.Fatalf("mutation %d is %+v after Release, want it cleared", i, muts[i])
		}
	}
	next, err := dec.Decode(Encode(nil, benchCommit(200)))
	if err != nil {
		t.Fatal(err)
	}
	if &next.Commit.Mutations[0] != &muts[0] {
		t.Fatal("the next command's mutations are not in the memory the first one's were")
	}
	// A decode releases the command before it, too.
	m := next.Commit.Mutations
	if _, err := dec.Decode(Encode(nil, &Command{Type: TypeExpire})); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m[199], Mutation{}) {
		t.Fatal("a Decode left the mutations of the command before it as they were")
	}
}

// What a warm Decoder allocates for a 1000-mutation commit does not grow
// with its mutations; Decode allocates them.
func TestADecoderDoesNotAllocateTheMutations(t *testing.T) {
	buf := Encode(nil, benchCommit(1000))
	var dec Decoder
	allocated := func(decode func()) uint64 {
		decode() // warm
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 20 {
			decode()
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / 20
	}
	withDecoder := allocated(func() { dec.Decode(buf) })
	withDecode := allocated(func() { Decode(buf) })
	if withDecoder > 1024 || withDecode < 1000*uint64(reflect.TypeFor[Mutation]().Size()) {
		t.Fatalf("bytes allocated per decode of 1000 mutations: %d with a Decoder, %d with Decode", withDecoder, withDecode)
	}
	t.Logf("bytes allocated per decode: %d with a Decoder, %d with Decode", withDecoder, withDecode)
}
