// Package proto holds the stated.v1 gRPC contract; the generated Go code is
// in proto/statedv1.
package proto

//go:generate bash gen.sh
