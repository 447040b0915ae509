package daemon_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

// TestTheBootstrapNodeStartsNoSecondClusterWhenTheMembersRefuseItsToken:
// the bootstrap node (BootstrapNodeID) that lost its disk asks the other
// Join addresses whether a cluster exists. Members with a token file
// refuse a node without --join-token (Unauthenticated): that refusal
// is a member answering, so the node must not bootstrap a second
// cluster beside its own; it joins, and the join reports the refusal.
func TestTheBootstrapNodeStartsNoSecondClusterWhenTheMembersRefuseItsToken(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	writeTokenFile(t, tokens)
	nodes := daemontest.StartCluster(t, 2, func(c *daemon.Config) {
		c.TokenFile = tokens
		c.JoinToken = "root-tok"
	})
	cfg := daemontest.Config(t, "node3")
	cfg.TokenFile = tokens // JoinToken forgotten
	cfg.Join = []string{nodes[0].TCPAddr(), nodes[1].TCPAddr()}
	cfg.BootstrapNodeID = "node3"
	cfg.JoinTimeout = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, cfg)
	if err == nil {
		defer d.Close()
		t.Fatalf("the bootstrap node started in cluster %s beside the members' cluster %s: the members' refusal of its token was taken for no cluster",
			d.Store().ClusterID(), nodes[0].Store().ClusterID())
	}
	if !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("Start: %v, want the members' refusal of the token", err)
	}
}
