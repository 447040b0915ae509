package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// redisSockets reads BENCH_REDIS_SOCKETS, "always=/path.sock,everysec=/path.sock":
// the unix sockets of the redis-server processes run.sh starts, one per
// appendfsync mode, each with its AOF in the data dir's filesystem.
func redisSockets(b *testing.B) [][2]string {
	env := os.Getenv("BENCH_REDIS_SOCKETS")
	if env == "" {
		b.Skip("BENCH_REDIS_SOCKETS is not set: bench/run.sh starts redis-server and sets it")
	}
	var out [][2]string
	for _, kv := range strings.Split(env, ",") {
		mode, sock, ok := strings.Cut(kv, "=")
		if !ok || mode == "" || sock == "" {
			b.Fatalf("BENCH_REDIS_SOCKETS: %q is not mode=/path.sock", kv)
		}
		out = append(out, [2]string{mode, sock})
	}
	return out
}

// BenchmarkRedis is what a user would run beside the app instead: Redis
// with its append-only file fsynced on every write (aof=always) or once a
// second (aof=everysec), over a unix socket, driven by go-redis with
// 100-byte values under new keys. set is one SET per round trip from 1
// and 64 clients (connections); pipeline=N sends N SETs in one round trip
// and multi=N wraps them in MULTI/EXEC, from as many clients as the
// stated rows they are compared with; get reads existing keys.
func BenchmarkRedis(b *testing.B) {
	for _, ms := range redisSockets(b) {
		mode, sock := ms[0], ms[1]
		b.Run("aof="+mode, func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, PoolSize: 64, PipelinePoolSize: 64, DisableIdentity: true})
			defer rdb.Close()
			ctx := context.Background()
			if err := rdb.Ping(ctx).Err(); err != nil {
				b.Fatalf("redis at %s: %v", sock, err)
			}
			if got, err := rdb.ConfigGet(ctx, "appendfsync").Result(); err != nil || got["appendfsync"] != mode {
				b.Fatalf("redis at %s: appendfsync is %v (%v), want %s", sock, got, err, mode)
			}
			value := make([]byte, 100)
			var key atomic.Uint64
			next := func() string { return fmt.Sprintf("key/%d", key.Add(1)) }
			for _, clients := range []int{1, 64} {
				b.Run(fmt.Sprintf("set/clients=%d", clients), func(b *testing.B) {
					parallel(b, clients, 1, "mutations/s", true, func(_, _ int) error {
						return rdb.Set(ctx, next(), value, 0).Err()
					})
				})
			}
			for _, shape := range []struct {
				n, clients int
			}{{100, 8}, {1000, 4}} {
				b.Run(fmt.Sprintf("pipeline=%d/clients=%d", shape.n, shape.clients), func(b *testing.B) {
					parallel(b, shape.clients, shape.n, "mutations/s", false, func(_, _ int) error {
						_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
							for range shape.n {
								p.Set(ctx, next(), value, 0)
							}
							return nil
						})
						return err
					})
				})
				b.Run(fmt.Sprintf("multi=%d/clients=%d", shape.n, shape.clients), func(b *testing.B) {
					parallel(b, shape.clients, shape.n, "mutations/s", false, func(_, _ int) error {
						_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
							for range shape.n {
								p.Set(ctx, next(), value, 0)
							}
							return nil
						})
						return err
					})
				})
			}
			b.Run("get/clients=1", func(b *testing.B) {
				if key.Load() == 0 { // run alone (-bench .../get): write keys to read
					if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
						for range 1000 {
							p.Set(ctx, next(), value, 0)
						}
						return nil
					}); err != nil {
						b.Fatal(err)
					}
				}
				written := key.Load()
				parallel(b, 1, 1, "reads/s", false, func(_, i int) error {
					return rdb.Get(ctx, fmt.Sprintf("key/%d", 1+uint64(i)%written)).Err()
				})
			})
		})
	}
}
