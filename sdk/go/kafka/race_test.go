//go:build race

package kafka

// raceEnabled is set when the tests run under the race detector.
const raceEnabled = true
