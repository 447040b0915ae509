// Package authz decides which gRPC calls a bearer token may make.
//
// A token file lists grants; each grant holds the SHA-256 of one token
// (never the token), the namespaces it covers (exact names, prefixes
// ending in "*", or "*" for all) and its operations (read, write,
// admin). Operations do not imply each other: a grant that may read and
// write lists both. A consumer group G counts as the namespace
// "kafka-group/G", so offsets and claims are granted like any namespace.
//
// Rules maps every RPC of the stated.v1 services to the operation and
// namespaces it needs; a method with no rule is refused, except the
// standard health and reflection services, which stay open. A call
// without a token, or with one the file does not know, is Unauthenticated;
// a call outside its grant is PermissionDenied, naming the operation and
// the namespace (never the token), and runs nothing. The window status of
// every namespace is status, open to any token: it lists the namespaces
// the token may read (Visible).
//
// An Authorizer holds the grants of one file and swaps them atomically on
// Reload; a file that does not parse keeps the old grants.
package authz
