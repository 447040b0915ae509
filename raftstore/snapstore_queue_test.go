package raftstore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// TestChunkQueueCarriesEveryByteInOrder: writes of every size, across
// chunk boundaries and more than the queue holds, read back as written.
func TestChunkQueueCarriesEveryByteInOrder(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, (queueChunks+5)*chunkSize+12345)
	for i := range want {
		want[i] = byte(rnd.IntN(256))
	}
	q := newChunkQueue()
	go func() {
		p := want
		for len(p) > 0 {
			n := min(len(p), 1+rnd.IntN(3*chunkSize/2))
			q.write(p[:n])
			p = p[n:]
		}
		q.close(nil)
	}()
	got, err := io.ReadAll(q)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (%v), wrote %d; equal %v", len(got), err, len(want), bytes.Equal(got, want))
	}
}

// TestChunkQueueWriterGoesOnOnceTheReaderStops: a reader that stops (the
// stager failed) never holds up the writer (Raft receiving the stream),
// and a queue closed with a cause gives the reader that cause.
func TestChunkQueueWriterGoesOnOnceTheReaderStops(t *testing.T) {
	q := newChunkQueue()
	one := make([]byte, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 4 * queueChunks {
			q.write(make([]byte, chunkSize))
		}
		q.close(nil)
	}()
	if _, err := q.Read(one); err != nil {
		t.Fatal(err)
	}
	q.stop()
	<-done // would wait forever if the writer waited for the reader

	cause := errors.New("canceled")
	q = newChunkQueue()
	q.write(make([]byte, chunkSize+10))
	q.close(cause)
	if n, err := io.Copy(io.Discard, q); !errors.Is(err, cause) || n != chunkSize {
		t.Fatalf("read %d bytes then %v; want the %d bytes of the whole chunk, then the cause", n, err, chunkSize)
	}
}
