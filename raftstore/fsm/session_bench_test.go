package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// BenchmarkApplySessionCommit measures applying a one-put commit without
// retry protection, in a session (a lane and a session record read and
// written), and as a format version 2 commit with its retry record; the
// encoding (and the payload hash) is timed too.
func BenchmarkApplySessionCommit(b *testing.B) {
	for _, mode := range []string{"plain", "session", "legacy"} {
		b.Run(mode, func(b *testing.B) {
			f, err := Open(b.TempDir()+"/state", nil)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			idx := uint64(1)
			if mode == "session" {
				f.Apply(rlog(idx, command.Encode(nil, openSessionCmd("c", 7, 0))))
				idx++
			}
			val := make([]byte, 100)
			b.ResetTimer()
			for i := range b.N {
				cmd := &command.Command{Type: command.TypeCommit, Now: 1e18, Commit: &command.Commit{ClientID: "c",
					Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "ns", Key: []byte(fmt.Sprint("k", i)), Value: val}}}}
				var data []byte
				switch mode {
				case "session":
					inSession(cmd, 7, 0, uint64(i+1))
					data = command.Encode(nil, cmd)
				case "legacy":
					cmd.Commit.Seq = uint64(i + 1)
					data = command.EncodeVersion2(cmd)
				default:
					data = command.Encode(nil, cmd)
				}
				f.Apply(rlog(idx, data))
				idx++
			}
		})
	}
}

func rlog(i uint64, d []byte) *raft.Log { return &raft.Log{Index: i, Type: raft.LogCommand, Data: d} }
