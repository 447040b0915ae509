//go:build race

package testenv

// Race is set when the tests run under the race detector.
const Race = true
