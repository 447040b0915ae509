// Package metrics holds stated's Prometheus instruments: a gRPC server
// interceptor (requests, latency, commits, reads by consistency level) and
// collectors that read the store's and the checkpoint coordinator's
// status at scrape time.
//
// It registers nothing globally: every constructor takes the
// prometheus.Registerer of the daemon that owns it, so two daemons in one
// process (tests) keep their numbers apart. Collectors only read: a scrape
// never proposes a Raft entry or takes a lock that a commit waits on,
// except the state scan of CountsEvery, which is rate-limited.
//
// The metric names, their meaning and an alerting guide are in
// docs/METRICS.md; keep the two in step.
package metrics
