// Command stated is the stated daemon and its command-line client.
//
//	stated run                       serve a node (single-node cluster in ./stated-data by default)
//	stated run --join ADDR[,ADDR]    serve a node that joins the cluster at ADDR when its data dir is new
//	stated run --config FILE         serve a node configured by a YAML file (--print-config shows the result)
//	stated kv put NS KEY VALUE       write a value (--ttl 10s)
//	stated kv get NS KEY             read a value, counter (--kind counter) or map entry (--kind map --sub-key S)
//	stated kv del NS KEY             delete everything under a key
//	stated kv del-prefix NS PREFIX   delete every key that starts with PREFIX
//	stated kv scan NS [PREFIX]       list entries in key order (--limit N)
//	stated kv add NS KEY DELTA       add to a counter
//	stated offsets get GROUP         the Kafka offsets stored for a consumer group
//	stated cluster members           the members, their addresses and the leader (--json)
//	stated cluster remove NODE       remove a member (forwarded to the leader)
//	stated status                    every member's role, term, last log, commit and applied index (--json)
//	stated windows define NS ...     define a window namespace (--tumbling|--hopping --advance|--session, --grace, --max-out-of-order, --aggregate)
//	stated windows list              window namespaces: watermark, lag, open windows, pending emissions, late records
//	stated windows get NS KEY        a key's windows (--from, --to)
//	stated windows open NS           open windows in key and start order
//	stated windows emissions NS      pending emissions (--after ID)
//	stated checkpoint trigger|list|show|savepoint|delete   checkpoints in the bucket
//	stated restore --from URL --data-dir DIR   a new node's state from a checkpoint (--node-id bootstraps it)
//	stated recovery [--from URL]     the recovery report: what a restore brings back, what Kafka replays, what is lost
//	stated demo                      the whole mission on 127.0.0.1: kfake, 3 nodes, a processor, crashes, total loss, restore; checks every count
//
// Every flag of `run` (including --log-level and --log-format), and the
// client flags --addr and --timeout, can also be set with an environment
// variable named STATED_ and the flag in upper snake case (STATED_DATA_DIR
// for --data-dir). `run` also reads a YAML config file (--config FILE or
// STATED_CONFIG) keyed by flag name without the dashes (data-dir: /var/lib/stated);
// an unknown key is an error naming it. A flag on the command line wins
// over the environment, and both over the file; `stated run --print-config`
// prints the result with each value's source and credentials masked.
//
// Client commands talk to a running daemon through the Go SDK; --addr
// may list several daemons of one cluster, comma-separated, and the client
// moves on to the next when one is down. Reads take --consistency local,
// session or linearizable. --json
// prints one JSON object per line. Exit codes: 0 success; 1 the request
// failed (a missing key, an invalid argument, a server error); 2 the daemon
// could not be reached or did not answer in time; 64 the command line
// itself was wrong (unknown command, wrong arguments or flags).
//
// This package holds flags, configuration, logging, signals and output
// formatting only: what a node does lives in package daemon, and what a
// client does in the SDK.
package main
