package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	stated "github.com/statedhq/stated/sdk/go"
)

// getOutput is what `kv get --json` prints. Bytes that are valid UTF-8 are
// printed as a string in "value", others base64-encoded in "value_base64".
type getOutput struct {
	Namespace    string  `json:"namespace"`
	Key          string  `json:"key"`
	Kind         string  `json:"kind"`
	SubKey       string  `json:"sub_key,omitempty"`
	Value        *string `json:"value,omitempty"`
	ValueBase64  []byte  `json:"value_base64,omitempty"`
	Counter      *int64  `json:"counter,omitempty"`
	ExpiresAt    string  `json:"expires_at,omitempty"` // RFC 3339; absent for never
	AppliedIndex uint64  `json:"applied_index,omitempty"`
}

func (o *getOutput) setValue(v []byte) {
	if utf8.Valid(v) {
		s := string(v)
		o.Value = &s
		return
	}
	o.ValueBase64 = v
}

func (o *getOutput) setExpiry(t time.Time) {
	if !t.IsZero() {
		o.ExpiresAt = t.UTC().Format(time.RFC3339Nano)
	}
}

// printGet prints a read: the bare value (or counter) on a line, or JSON.
func (c *cli) printGet(o getOutput, asJSON bool) error {
	if asJSON {
		return c.printJSON(o)
	}
	switch {
	case o.Counter != nil:
		fmt.Fprintln(c.stdout, *o.Counter)
	case o.Value != nil:
		fmt.Fprintln(c.stdout, *o.Value)
	default:
		fmt.Fprintln(c.stdout, strconv.Quote(string(o.ValueBase64)))
	}
	return nil
}

// printEntry prints a scanned entry: KEY, a tab and the value; map entries
// as KEY[SUB], list elements as KEY[#POSITION], counters as the number.
// Bytes that are not printable UTF-8 are quoted.
func (c *cli) printEntry(ns string, e stated.Entry, asJSON bool) error {
	kind := e.Kind.String()
	if asJSON {
		o := getOutput{Namespace: ns, Key: string(e.Key), Kind: kind}
		switch kind {
		case "counter":
			n := e.Counter
			o.Counter = &n
		case "map":
			o.SubKey = string(e.SubKey)
			o.setValue(e.Value)
		case "list":
			o.SubKey = strconv.FormatUint(listPosition(e.SubKey), 10)
			o.setValue(e.Value)
		default:
			o.setValue(e.Value)
		}
		o.setExpiry(e.ExpiresAt)
		return c.printJSON(o)
	}
	name := printable(e.Key)
	switch kind {
	case "counter":
		fmt.Fprintf(c.stdout, "%s\t%d\n", name, e.Counter)
	case "map":
		fmt.Fprintf(c.stdout, "%s[%s]\t%s\n", name, printable(e.SubKey), printable(e.Value))
	case "list":
		fmt.Fprintf(c.stdout, "%s[#%d]\t%s\n", name, listPosition(e.SubKey), printable(e.Value))
	default:
		fmt.Fprintf(c.stdout, "%s\t%s\n", name, printable(e.Value))
	}
	return nil
}

func (c *cli) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s\n", b)
	return nil
}

// printable returns b as text when it is printable UTF-8 without tabs or
// newlines, else Go-quoted so that one entry stays one line.
func printable(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// listPosition decodes a list element's 8-byte big-endian position.
func listPosition(b []byte) uint64 {
	var p uint64
	for _, c := range b {
		p = p<<8 | uint64(c)
	}
	return p
}
