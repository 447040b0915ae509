//go:build !race

package fsm

// modelRace is set under the race detector (see model_race_test.go).
const modelRace = false
