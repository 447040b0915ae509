//go:build race

package fsm

// modelRace is set under the race detector, which makes every Pebble call
// of TestStateMachineMatchesModel about twenty times slower: it then runs
// fewer and shorter logs.
const modelRace = true
