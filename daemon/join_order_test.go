package daemon

import (
	"slices"
	"testing"
)

// A joining node sends its Join first to the addresses that answered as
// members: an address that did not answer may be another node joining
// too, which holds a Join until its attempt times out (the total-loss
// runbook starts n2 and n3 on empty data dirs together; n2 waited 12 s on
// n3 before it tried n1).
func TestJoinTriesTheAddressesThatAnsweredAsMembersFirst(t *testing.T) {
	addrs := []string{"n2:7430", "n3:7440", "n1:7420", "n4:7450"}
	ids := []string{"", "", "c1", "c1"}
	if got, want := membersFirst(addrs, ids), []string{"n1:7420", "n4:7450", "n2:7430", "n3:7440"}; !slices.Equal(got, want) {
		t.Fatalf("membersFirst = %v, want %v", got, want)
	}
	if got := membersFirst(addrs, []string{"", "", "", ""}); !slices.Equal(got, addrs) {
		t.Fatalf("with no member answering, the order changed: %v", got)
	}
}
