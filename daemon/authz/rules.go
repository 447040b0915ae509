package authz

import (
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Need is what one call requires of its token's grant.
type Need struct {
	// Op is the operation; "" means any known token will do.
	Op Operation
	// Namespaces must each be granted Op. Empty: any namespace granted
	// Op will do (OpenSession, an empty Commit).
	Namespaces []string
	// Cluster needs Op on "*": membership and checkpoint management.
	Cluster bool
}

// Rule computes the Need of a call from its request message.
type Rule func(req any) Need

func anyToken(any) Need     { return Need{} }
func adminCluster(any) Need { return Need{Op: Admin, Cluster: true} }
func anyWrite(any) Need     { return Need{Op: Write} }

// nsRule needs op on the namespace ns returns.
func nsRule[T any](op Operation, ns func(T) string) Rule {
	return func(req any) Need {
		r, ok := req.(T)
		if !ok {
			return Need{Op: op, Cluster: true} // unexpected message: be strict
		}
		return Need{Op: op, Namespaces: []string{ns(r)}}
	}
}

// Rules maps every RPC of the stated.v1 services (full method name) to
// what it needs. TestEveryRPCHasARule keeps it complete.
var Rules = map[string]Rule{
	// State.
	statedv1.State_Commit_FullMethodName:      commitRule,
	statedv1.State_Get_FullMethodName:         nsRule(Read, (*statedv1.GetRequest).GetNamespace),
	statedv1.State_Scan_FullMethodName:        nsRule(Read, (*statedv1.ScanRequest).GetNamespace),
	statedv1.State_GetOffsets_FullMethodName:  nsRule(Read, func(r *statedv1.GetOffsetsRequest) string { return GroupNamespace(r.GetGroup()) }),
	statedv1.State_Claim_FullMethodName:       nsRule(Write, func(r *statedv1.ClaimRequest) string { return GroupNamespace(r.GetGroup()) }),
	statedv1.State_Release_FullMethodName:     nsRule(Write, func(r *statedv1.ReleaseRequest) string { return GroupNamespace(r.GetGroup()) }),
	statedv1.State_OpenSession_FullMethodName: anyWrite,
	// Each commit of a batch is then checked as a Commit (AuthorizeCommit).
	statedv1.State_CommitBatch_FullMethodName: anyWrite,
	// Checked when the stream opens; each commit of each request is
	// then checked as a Commit (AuthorizeCommit).
	statedv1.State_CommitStream_FullMethodName: anyWrite,

	// Cluster: membership changes are admin; looking is for any token.
	statedv1.Cluster_Join_FullMethodName:       adminCluster,
	statedv1.Cluster_Remove_FullMethodName:     adminCluster,
	statedv1.Cluster_Members_FullMethodName:    anyToken,
	statedv1.Cluster_NodeStatus_FullMethodName: anyToken,

	// Checkpoints: taking, savepoints and deleting are admin; looking
	// is for any token.
	statedv1.Checkpoints_Trigger_FullMethodName:   adminCluster,
	statedv1.Checkpoints_Savepoint_FullMethodName: adminCluster,
	statedv1.Checkpoints_Delete_FullMethodName:    adminCluster,
	statedv1.Checkpoints_List_FullMethodName:      anyToken,
	statedv1.Checkpoints_Get_FullMethodName:       anyToken,
	statedv1.Checkpoints_Status_FullMethodName:    anyToken,
	statedv1.Checkpoints_Recovery_FullMethodName:  anyToken,

	// Windows: defining is write (a processor defines its own windows at
	// start, as it writes its own state); the rest reads.
	statedv1.Windows_Define_FullMethodName:    nsRule(Write, func(r *statedv1.DefineWindowsRequest) string { return r.GetSpec().GetNamespace() }),
	statedv1.Windows_Get_FullMethodName:       nsRule(Read, (*statedv1.GetWindowsRequest).GetNamespace),
	statedv1.Windows_ListOpen_FullMethodName:  nsRule(Read, (*statedv1.ListOpenWindowsRequest).GetNamespace),
	statedv1.Windows_Emissions_FullMethodName: nsRule(Read, (*statedv1.ReadEmissionsRequest).GetNamespace),
	statedv1.Windows_Status_FullMethodName:    windowStatusRule,
}

// windowStatusRule needs read on the one namespace asked for. Asking for
// every namespace (none named) is status, open to any token: the handler
// answers with the namespaces the token may see (Visible).
func windowStatusRule(req any) Need {
	r, ok := req.(*statedv1.WindowStatusRequest)
	if !ok {
		return Need{Op: Read, Cluster: true} // unexpected message: be strict
	}
	if r.GetNamespace() == "" {
		return Need{}
	}
	return Need{Op: Read, Namespaces: []string{r.GetNamespace()}}
}

// commitRule needs write on every namespace a commit touches, and on the
// group of every offset it records.
func commitRule(req any) Need {
	r, ok := req.(*statedv1.CommitRequest)
	if !ok {
		return Need{Op: Write, Cluster: true}
	}
	seen := map[string]bool{}
	var ns []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			ns = append(ns, n)
		}
	}
	for _, m := range r.GetMutations() {
		add(m.GetNamespace())
	}
	for _, o := range r.GetOffsets() {
		add(GroupNamespace(o.GetGroup()))
	}
	for _, a := range r.GetWindowAdds() {
		add(a.GetNamespace())
	}
	for _, h := range r.GetWatermarkHints() {
		add(h.GetNamespace())
	}
	for _, a := range r.GetAcks() {
		add(a.GetNamespace())
	}
	for _, t := range r.GetTimers() {
		add(t.GetNamespace())
	}
	return Need{Op: Write, Namespaces: ns}
}
