package grpcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/grpc"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/fsm"
)

// errBatchFull stops a store scan once a ScanResponse is full.
var errBatchFull = errors.New("grpcapi: scan batch full")

// Scan streams the selected entries in key order, in batches of at most
// scanBatchEntries entries or about scanBatchBytes. At most maxScans
// streams are served at once; a scan beyond them waits.
//
// Entries are read by store scans that end before anything is sent: the
// store holds a read lock while it scans, and a slow client must never
// keep it. A full batch ends a store scan, and the next one resumes just
// after the last entry read. As a consequence a long scan is not one
// point-in-time view: a write applied between two store scans may be seen
// by the later one. Each ScanResponse carries the applied index it was
// started at; a scan that finds nothing sends one empty ScanResponse so the
// client still learns the index.
func (s *Server) Scan(r *statedv1.ScanRequest, stream statedv1.State_ScanServer) error {
	ctx := stream.Context()
	if err := validateScan(r); err != nil {
		return s.toStatus(ctx, err)
	}
	select {
	case s.scanSlots <- struct{}{}:
		defer func() { <-s.scanSlots }()
	case <-ctx.Done():
		return s.toStatus(ctx, fmt.Errorf("%w: waiting for one of the %d scans in flight to end (a client that opens scans and does not read them holds them)", ctx.Err(), maxScans))
	}
	if conn, fctx, err := s.readLeaderConn(ctx, r.GetRead()); err != nil || conn != nil {
		if err != nil {
			return s.toStatus(ctx, err)
		}
		return s.toStatus(ctx, forwardScan(fctx, conn, r, stream))
	}
	if err := s.barrier(ctx, r.GetRead()); err != nil {
		return s.toStatus(ctx, err)
	}
	remaining := math.MaxInt
	if l := r.GetLimit(); l > 0 && l < uint64(math.MaxInt) {
		remaining = int(l)
	}
	queue := []fsm.ScanQuery{{
		Namespace: r.GetNamespace(),
		Kind:      fsm.Kind(r.GetKind()),
		Key:       r.GetKey(),
		Prefix:    r.GetPrefix(),
		Start:     r.GetStart(),
		End:       r.GetEnd(),
	}}
	b := batch{resp: &statedv1.ScanResponse{AppliedIndex: s.store.AppliedIndex()}}
	sent := false
	for len(queue) > 0 && remaining > 0 {
		if err := ctx.Err(); err != nil {
			return s.toStatus(ctx, err)
		}
		q := queue[0]
		before := len(b.resp.Entries)
		stopped, err := s.fill(&b, q, min(remaining, scanBatchEntries-before))
		if err != nil {
			return s.toStatus(ctx, err)
		}
		remaining -= len(b.resp.Entries) - before
		if stopped && len(b.resp.Entries) > before {
			queue = append(resume(q, b.resp.Entries[len(b.resp.Entries)-1]), queue[1:]...)
		} else {
			queue = queue[1:] // q is exhausted
		}
		if b.full() {
			if err := stream.Send(b.resp); err != nil {
				return s.toStatus(ctx, err)
			}
			sent = true
			b = batch{resp: &statedv1.ScanResponse{AppliedIndex: s.store.AppliedIndex()}}
		}
	}
	if len(b.resp.Entries) > 0 || !sent {
		if err := stream.Send(b.resp); err != nil {
			return s.toStatus(ctx, err)
		}
	}
	return nil
}

// forwardScan relays the leader's answer to a scan to stream.
func forwardScan(ctx context.Context, conn grpc.ClientConnInterface, r *statedv1.ScanRequest, stream statedv1.State_ScanServer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the leader's stream when the client goes away
	up, err := statedv1.NewStateClient(conn).Scan(ctx, r)
	if err != nil {
		return forwardedError(err)
	}
	for {
		resp, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return forwardedError(err)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// batch is a ScanResponse being filled.
type batch struct {
	resp *statedv1.ScanResponse
	size int // approximate encoded bytes
}

func (b *batch) full() bool {
	return len(b.resp.Entries) >= scanBatchEntries || b.size >= scanBatchBytes
}

// fill adds up to limit entries of q to b in one store scan, stopping early
// when b is full. stopped reports that it stopped at a limit rather than at
// the end of q.
func (s *Server) fill(b *batch, q fsm.ScanQuery, limit int) (stopped bool, err error) {
	added := 0
	q.Limit = limit
	if q.Kind == fsm.KindList && (len(q.Start) > 0 || len(q.Prefix) > 0) {
		// listBefore skips entries, which must not count against the
		// store's limit; the callback cuts the scan instead.
		q.Limit = 0
	}
	err = s.store.Scan(q, func(e fsm.Entry) error {
		if listBefore(q, e) {
			return nil
		}
		b.resp.Entries = append(b.resp.Entries, toEntry(e))
		b.size += len(e.Key) + len(e.SubKey) + len(e.Value) + 32
		if added++; added >= limit || b.full() {
			return errBatchFull
		}
		return nil
	})
	if errors.Is(err, errBatchFull) {
		return true, nil
	}
	return false, err
}

// listBefore reports whether e, an element of a list scan, lies below the
// lower bound that q's Start or Prefix sets. The store's list scan begins
// at the list's first element whatever they say, so they are applied here;
// resumed list scans depend on it. Elements are ordered by their 8-byte
// big-endian positions.
func listBefore(q fsm.ScanQuery, e fsm.Entry) bool {
	if q.Kind != fsm.KindList {
		return false
	}
	return bytes.Compare(e.SubKey, q.Start) < 0 || bytes.Compare(e.SubKey, q.Prefix) < 0
}

// resume returns the queries that visit, in order, what q would visit after
// entry last. The store orders entries by key, then kind (value, map, list,
// counter), then sub-key. In a namespace scan a range bound (Start) applies
// to keys only, so the rest of last's key is read by per-kind queries
// before the namespace scan goes on after that key.
func resume(q fsm.ScanQuery, last *statedv1.Entry) []fsm.ScanQuery {
	after := func(b []byte) []byte { return append(append([]byte(nil), b...), 0) }
	switch q.Kind {
	case fsm.KindMap, fsm.KindList:
		q.Start = after(last.GetSubKey())
		return []fsm.ScanQuery{q}
	case fsm.KindValue, fsm.KindCounter:
		q.Start = after(last.GetKey())
		return []fsm.ScanQuery{q}
	}
	key := last.GetKey()
	ns := q.Namespace
	var out []fsm.ScanQuery
	switch fsm.Kind(last.GetKind()) {
	case fsm.KindValue:
		out = append(out,
			fsm.ScanQuery{Namespace: ns, Kind: fsm.KindMap, Key: key},
			fsm.ScanQuery{Namespace: ns, Kind: fsm.KindList, Key: key})
	case fsm.KindMap:
		out = append(out,
			fsm.ScanQuery{Namespace: ns, Kind: fsm.KindMap, Key: key, Start: after(last.GetSubKey())},
			fsm.ScanQuery{Namespace: ns, Kind: fsm.KindList, Key: key})
	case fsm.KindList:
		out = append(out,
			fsm.ScanQuery{Namespace: ns, Kind: fsm.KindList, Key: key, Start: after(last.GetSubKey())})
	}
	if fsm.Kind(last.GetKind()) != fsm.KindCounter {
		// The counter of key, if any: a counter scan of key alone.
		out = append(out, fsm.ScanQuery{Namespace: ns, Kind: fsm.KindCounter, Start: key, End: after(key)})
	}
	q.Start = after(key)
	return append(out, q)
}

// toEntry copies a store entry, whose slices are only valid during the
// scan callback, into a wire entry.
func toEntry(e fsm.Entry) *statedv1.Entry {
	return &statedv1.Entry{
		Kind:                statedv1.Kind(e.Kind),
		Key:                 append([]byte(nil), e.Key...),
		SubKey:              append([]byte(nil), e.SubKey...),
		Value:               append([]byte(nil), e.Value...),
		Counter:             e.Counter,
		ExpiresAtUnixMillis: unixMillis(e.ExpiresAt),
	}
}
