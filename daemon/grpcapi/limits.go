package grpcapi

// Limits on requests, checked before anything is proposed to Raft. The
// table in doc.go documents them for users; keep the two in step.
const (
	// MaxNamespaceBytes is the longest namespace. Namespaces are valid UTF-8
	// without control characters.
	MaxNamespaceBytes = 256
	// MaxKeyBytes is the longest key, and the longest scan prefix or bound.
	MaxKeyBytes = 4096
	// MaxSubKeyBytes is the longest map sub-key.
	MaxSubKeyBytes = 4096
	// MaxValueBytes is the largest value.
	MaxValueBytes = 4 << 20
	// MaxMutationsPerCommit is the most mutations one commit may carry.
	MaxMutationsPerCommit = 100_000
	// MaxOffsetsPerCommit is the most offsets one commit may carry.
	MaxOffsetsPerCommit = 10_000
	// MaxTTLMillis is the longest TTL: 100 years (of 365 days).
	MaxTTLMillis = 100 * 365 * 24 * 60 * 60 * 1000
	// MaxGroupBytes is the longest consumer group id.
	MaxGroupBytes = 255
	// MaxTopicLength is the longest Kafka topic name. Topics are made of
	// ASCII letters, digits, '.', '_' and '-', and are not "." or "..".
	MaxTopicLength = 249
	// MaxClientIDBytes is the longest client id.
	MaxClientIDBytes = 256
	// MaxWindowAddsPerCommit, MaxWatermarkHintsPerCommit, MaxAcksPerCommit
	// and MaxTimersPerCommit bound a commit's window parts.
	MaxWindowAddsPerCommit     = 100_000
	MaxWatermarkHintsPerCommit = 10_000
	MaxAcksPerCommit           = 100_000
	MaxTimersPerCommit         = 100_000
	// MaxSourceBytes is the longest source name of a window add or hint.
	MaxSourceBytes = 256
	// MaxWindowPage is the largest page of windows or emissions one read
	// returns; a read that asks for 0 gets defaultWindowPage.
	MaxWindowPage     = 10_000
	defaultWindowPage = 1000
)

// Scan batching: one ScanResponse carries at most scanBatchEntries entries
// and stops growing once it holds about scanBatchBytes.
const (
	scanBatchEntries = 256
	scanBatchBytes   = 1 << 20
	// maxScans is how many Scan streams the daemon serves at once, over
	// every connection (a follower's relay of the leader's answer counts
	// too): a stream whose client does not read holds what it sent last
	// (about 2.5 MiB: the batch, queued in the transport) until the client
	// reads or goes away, so the memory of scans is bounded by this many
	// streams, not by the number clients open. A scan beyond it waits for
	// one to end, bounded by its own deadline.
	maxScans = 32
)
