package test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/fsm"
	"github.com/statedhq/stated/uploader"
)

// BenchmarkRestore restores a checkpoint of a 1 GB state (built as in the
// checkpoint benchmarks) from a file:// bucket into an empty data dir,
// with every file downloaded and its SHA-256 verified, next to `cp -r` of
// the same checkpoint directory in the same run. Run with -benchtime 1x.
func BenchmarkRestore(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int64
	}{{"100MB", 100 << 20}, {"1GB", 1 << 30}} {
		b.Run("state="+size.name, func(b *testing.B) {
			s := newCkptState(b, size.bytes)
			s.flush()
			cp, _ := s.barrier()
			if _, err := fsm.TrimCheckpointWAL(cp.Dir); err != nil {
				b.Fatal(err)
			}
			bucket := (&url.URL{Scheme: "file", Path: b.TempDir()}).String()
			bkt, err := uploader.OpenBucket(context.Background(), bucket)
			if err != nil {
				b.Fatal(err)
			}
			defer bkt.Close()
			up, err := uploader.New(uploader.Config{Bucket: bkt, Workers: 8})
			if err != nil {
				b.Fatal(err)
			}
			m, _, err := up.Upload(context.Background(), cp.Dir, uploader.Meta{Epoch: cp.Epoch, RaftIndex: cp.Index, CreatedAt: time.Now()}, nil)
			if err != nil {
				b.Fatal(err)
			}
			bytes := m.Bytes()
			b.ResetTimer()
			var restore, cpTime time.Duration
			for range b.N {
				dir := filepath.Join(b.TempDir(), "data")
				start := time.Now()
				res, err := recovery.Restore(context.Background(), recovery.RestoreOptions{Uploader: up, DataDir: dir})
				if err != nil {
					b.Fatal(err)
				}
				restore += time.Since(start)
				if res.Download.BytesDownloaded != bytes {
					b.Fatalf("downloaded %d bytes, the checkpoint has %d", res.Download.BytesDownloaded, bytes)
				}
				dst := filepath.Join(b.TempDir(), "copy")
				start = time.Now()
				if out, err := exec.Command("cp", "-r", cp.Dir, dst).CombinedOutput(); err != nil {
					b.Fatalf("cp: %v %s", err, out)
				}
				if out, err := exec.Command("sync").CombinedOutput(); err != nil {
					b.Fatalf("sync: %v %s", err, out)
				}
				cpTime += time.Since(start)
			}
			n := float64(b.N)
			b.ReportMetric(restore.Seconds()/n, "restore-s")
			b.ReportMetric(float64(bytes)/(1<<20)/(restore.Seconds()/n), "restore-MB/s")
			b.ReportMetric(cpTime.Seconds()/n, "cp-s")
			b.ReportMetric(restore.Seconds()/cpTime.Seconds(), "restore/cp")
		})
	}
}

// BenchmarkRestartAfterSIGKILL measures the time from a SIGKILL of a
// single-node `stated run` holding 100 MB of state to the restarted
// process answering a linearizable read: process start, Pebble open and
// Raft log replay, election, serving.
func BenchmarkRestartAfterSIGKILL(b *testing.B) {
	bin := statedBinary(b)
	dir := b.TempDir()
	sock := filepath.Join(shortTempDir(b), "s.sock")
	args := []string{"run", "--data-dir", dir, "--socket", sock, "--grpc-addr", "127.0.0.1:0", "--raft-addr", freeAddr(b), "--log-level", "error"}
	start := func() *exec.Cmd {
		cmd := daemontest.DieWithParent(exec.Command(bin, args...))
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		return cmd
	}
	cmd := start()
	client := waitServing(b, sock, time.Minute)
	fill := make([]byte, 1024)
	for i := 0; i < 100_000; i += 1000 {
		req := &statedv1.CommitRequest{}
		for j := range 1000 {
			req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
				Namespace: "ns", Key: []byte(fmt.Sprintf("k%08d", i+j)), Value: fill})
		}
		if _, err := client.Commit(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	var ds []time.Duration
	b.ResetTimer()
	for range b.N {
		cmd.Process.Kill()
		cmd.Wait()
		t0 := time.Now()
		cmd = start()
		waitServing(b, sock, time.Minute)
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	cmd.Process.Kill()
	cmd.Wait()
	slices.Sort(ds)
	b.ReportMetric(ds[len(ds)/2].Seconds(), "p50-s")
	b.ReportMetric(ds[len(ds)-1].Seconds(), "max-s")
}

// waitServing polls the socket until a linearizable read succeeds.
func waitServing(b testing.TB, sock string, timeout time.Duration) statedv1.StateClient {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	c := statedv1.NewStateClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Get(ctx, &statedv1.GetRequest{Namespace: "ns", Key: []byte("k00000000"), Kind: statedv1.Kind_KIND_VALUE,
			Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			b.Fatalf("not serving within %s: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func shortTempDir(b testing.TB) string {
	dir, err := os.MkdirTemp("", "stated")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
