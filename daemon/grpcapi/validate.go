package grpcapi

import (
	"math"

	"fmt"
	"unicode"
	"unicode/utf8"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// The validators below check one request each and return a *fieldError
// naming the first bad field. They run before anything is proposed, so a
// refused request changes nothing.

func validateCommit(r *statedv1.CommitRequest) error {
	if n := len(r.GetMutations()); n > MaxMutationsPerCommit {
		return invalid("mutations", "%d mutations, limit %d", n, MaxMutationsPerCommit)
	}
	if n := len(r.GetOffsets()); n > MaxOffsetsPerCommit {
		return invalid("offsets", "%d offsets, limit %d", n, MaxOffsetsPerCommit)
	}
	if id := r.GetClientId(); id != "" {
		if err := validateClientID("client_id", id); err != nil {
			return err
		}
	}
	switch {
	case r.GetSessionId() != 0 && r.GetClientId() == "":
		return invalid("session_id", "set without client_id")
	case r.GetSessionId() != 0 && r.GetSequence() == 0:
		return invalid("sequence", "0 with a session_id: sequences start at 1")
	case r.GetSequence() != 0 && r.GetSessionId() == 0:
		return invalid("session_id", "0 with a sequence: open a session with OpenSession and send its id, so that a retry is recognised")
	case r.GetLane() != 0 && r.GetSessionId() == 0:
		return invalid("lane", "set without session_id")
	}
	for i, m := range r.GetMutations() {
		if err := validateMutation(m); err != nil {
			return within(fmt.Sprintf("mutations[%d]", i), err)
		}
	}
	type partition struct {
		group, topic string
		partition    int32
	}
	seen := make(map[partition]int, len(r.GetOffsets()))
	for i, o := range r.GetOffsets() {
		if err := validateOffset(o); err != nil {
			return within(fmt.Sprintf("offsets[%d]", i), err)
		}
		if o.GetEpoch() != 0 && r.GetClientId() == "" {
			return invalid(fmt.Sprintf("offsets[%d].epoch", i), "set without client_id: a claimed partition's offsets move only with its owner's client id")
		}
		p := partition{o.GetGroup(), o.GetTopic(), o.GetPartition()}
		if j, dup := seen[p]; dup {
			return invalid(fmt.Sprintf("offsets[%d]", i), "duplicate of offsets[%d] (group %q, topic %q, partition %d)", j, p.group, p.topic, p.partition)
		}
		seen[p] = i
	}
	return validateWindowParts(r)
}

func validateOpenSession(r *statedv1.OpenSessionRequest) error {
	if err := validateClientID("client_id", r.GetClientId()); err != nil {
		return err
	}
	if id := r.GetSessionId(); id > math.MaxInt64 {
		return invalid("session_id", "%d is above 2^63-1", id)
	}
	return nil
}

// mutationRules says which fields a mutation kind uses.
type mutationRules struct {
	emptyKeyOK bool // DELETE_PREFIX with an empty key clears the namespace
	subKey     bool // required
	value      bool
	delta      bool
	ttl        bool
}

var rulesByKind = map[statedv1.MutationKind]mutationRules{
	statedv1.MutationKind_MUTATION_KIND_PUT:           {value: true, ttl: true},
	statedv1.MutationKind_MUTATION_KIND_DELETE:        {},
	statedv1.MutationKind_MUTATION_KIND_MAP_PUT:       {subKey: true, value: true, ttl: true},
	statedv1.MutationKind_MUTATION_KIND_MAP_DELETE:    {subKey: true},
	statedv1.MutationKind_MUTATION_KIND_LIST_APPEND:   {value: true, ttl: true},
	statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD:   {delta: true, ttl: true},
	statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX: {emptyKeyOK: true},
}

// within puts the field of a *fieldError under parent, e.g. "key" under
// "mutations[3]". Field paths are built only for the error, never for the
// valid requests on the hot path.
func within(parent string, err error) error {
	if fe, ok := err.(*fieldError); ok {
		fe.Field = parent + "." + fe.Field
	}
	return err
}

// validateMutation checks one mutation; field paths in its error are
// relative to the mutation.
func validateMutation(m *statedv1.Mutation) error {
	kind := m.GetKind()
	rules, ok := rulesByKind[kind]
	if !ok {
		if kind == statedv1.MutationKind_MUTATION_KIND_UNSPECIFIED {
			return invalid("kind", "unspecified")
		}
		return invalid("kind", "unknown mutation kind %d", int32(kind))
	}
	name := kindName(kind)
	if err := validateNamespace("namespace", m.GetNamespace()); err != nil {
		return err
	}
	if len(m.GetKey()) == 0 && !rules.emptyKeyOK {
		return invalid("key", "empty")
	}
	if err := maxLen("key", m.GetKey(), MaxKeyBytes); err != nil {
		return err
	}
	switch {
	case rules.subKey && len(m.GetSubKey()) == 0:
		return invalid("sub_key", "empty; %s needs one", name)
	case !rules.subKey && len(m.GetSubKey()) > 0:
		return invalid("sub_key", "must be empty for %s", name)
	}
	if err := maxLen("sub_key", m.GetSubKey(), MaxSubKeyBytes); err != nil {
		return err
	}
	if !rules.value && len(m.GetValue()) > 0 {
		return invalid("value", "must be empty for %s", name)
	}
	if err := maxLen("value", m.GetValue(), MaxValueBytes); err != nil {
		return err
	}
	if !rules.delta && m.GetDelta() != 0 {
		return invalid("delta", "must be zero for %s", name)
	}
	return validateTTL("ttl_millis", m.GetTtlMillis(), rules.ttl, name)
}

func validateTTL(field string, ttl int64, allowed bool, kind string) error {
	switch {
	case ttl < 0:
		return invalid(field, "negative (%d)", ttl)
	case ttl > 0 && !allowed:
		return invalid(field, "must be zero for %s", kind)
	case ttl > MaxTTLMillis:
		return invalid(field, "%d ms, limit %d (100 years)", ttl, int64(MaxTTLMillis))
	}
	return nil
}

// kindName is the proto name of a mutation kind without its prefix, e.g.
// "MAP_PUT", as users see it in the contract.
func kindName(k statedv1.MutationKind) string {
	const prefix = "MUTATION_KIND_"
	name := k.String()
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		return name[len(prefix):]
	}
	return name
}

// validateOffset checks one offset; field paths in its error are relative
// to the offset.
func validateOffset(o *statedv1.Offset) error {
	if err := validateGroup("group", o.GetGroup()); err != nil {
		return err
	}
	if err := validateTopic("topic", o.GetTopic()); err != nil {
		return err
	}
	if p := o.GetPartition(); p < 0 {
		return invalid("partition", "negative (%d)", p)
	}
	if off := o.GetOffset(); off < 0 {
		return invalid("offset", "negative (%d)", off)
	}
	return nil
}

// validateNamespace checks a namespace: 1..MaxNamespaceBytes bytes of
// UTF-8 without control characters.
func validateNamespace(field, ns string) error {
	return validateName(field, ns, MaxNamespaceBytes)
}

// validateClientID checks a client id (a session's, a commit's, a claim's
// owner): 1..MaxClientIDBytes bytes of UTF-8 without control characters,
// which would reach logs and the command line's output as they are.
func validateClientID(field, id string) error {
	return validateName(field, id, MaxClientIDBytes)
}

// validateName checks a name that reaches logs and the command line's
// output as it is: 1..limit bytes of UTF-8 without control characters.
func validateName(field, name string, limit int) error {
	switch {
	case name == "":
		return invalid(field, "empty")
	case len(name) > limit:
		return invalid(field, "%d bytes, limit %d", len(name), limit)
	case !utf8.ValidString(name):
		return invalid(field, "not valid UTF-8")
	}
	for i, r := range name {
		if unicode.IsControl(r) {
			return invalid(field, "control character %U at byte %d", r, i)
		}
	}
	return nil
}

func validateGroup(field, group string) error {
	switch {
	case group == "":
		return invalid(field, "empty")
	case len(group) > MaxGroupBytes:
		return invalid(field, "%d bytes, limit %d", len(group), MaxGroupBytes)
	}
	return validUTF8(field, group)
}

// validUTF8 refuses a string that is not valid UTF-8. The wire contract
// does not check strings (features.utf8_validation = NONE in
// stated.proto), so that such a request reaches this validation and is
// refused naming its field, instead of failing gRPC's decoding.
func validUTF8(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "not valid UTF-8")
	}
	return nil
}

// validateTopic applies Kafka's rules for topic names.
func validateTopic(field, topic string) error {
	switch {
	case topic == "":
		return invalid(field, "empty")
	case len(topic) > MaxTopicLength:
		return invalid(field, "%d characters, limit %d", len(topic), MaxTopicLength)
	case topic == "." || topic == "..":
		return invalid(field, "%q is not a valid topic name", topic)
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalid(field, "invalid character %q at %d; topics use [a-zA-Z0-9._-]", c, i)
		}
	}
	return nil
}

func maxLen(field string, b []byte, limit int) error {
	if len(b) > limit {
		return invalid(field, "%d bytes, limit %d", len(b), limit)
	}
	return nil
}

func validateRead(field string, r *statedv1.ReadOptions) error {
	if _, ok := statedv1.Consistency_name[int32(r.GetConsistency())]; !ok {
		return invalid(field+".consistency", "unknown consistency %d", int32(r.GetConsistency()))
	}
	return nil
}

func validateGet(r *statedv1.GetRequest) error {
	if err := validateNamespace("namespace", r.GetNamespace()); err != nil {
		return err
	}
	if len(r.GetKey()) == 0 {
		return invalid("key", "empty")
	}
	if err := maxLen("key", r.GetKey(), MaxKeyBytes); err != nil {
		return err
	}
	switch r.GetKind() {
	case statedv1.Kind_KIND_VALUE, statedv1.Kind_KIND_COUNTER:
		if len(r.GetSubKey()) > 0 {
			return invalid("sub_key", "must be empty for kind %s", r.GetKind())
		}
	case statedv1.Kind_KIND_MAP:
		if len(r.GetSubKey()) == 0 {
			return invalid("sub_key", "empty; kind KIND_MAP needs one")
		}
		if err := maxLen("sub_key", r.GetSubKey(), MaxSubKeyBytes); err != nil {
			return err
		}
	default:
		return invalid("kind", "%s cannot be read with Get; use KIND_VALUE, KIND_COUNTER or KIND_MAP", kindString(r.GetKind()))
	}
	return validateRead("read", r.GetRead())
}

func validateScan(r *statedv1.ScanRequest) error {
	if err := validateNamespace("namespace", r.GetNamespace()); err != nil {
		return err
	}
	switch r.GetKind() {
	case statedv1.Kind_KIND_MAP, statedv1.Kind_KIND_LIST:
		if len(r.GetKey()) == 0 {
			return invalid("key", "empty; a scan of kind %s reads the one map or list at key", r.GetKind())
		}
	case statedv1.Kind_KIND_UNSPECIFIED, statedv1.Kind_KIND_VALUE, statedv1.Kind_KIND_COUNTER:
		if len(r.GetKey()) > 0 {
			return invalid("key", "must be empty for kind %s; use prefix, start and end", r.GetKind())
		}
	default:
		return invalid("kind", "%s", kindString(r.GetKind()))
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"key", r.GetKey()}, {"prefix", r.GetPrefix()}, {"start", r.GetStart()}, {"end", r.GetEnd()}} {
		if err := maxLen(f.name, f.b, MaxKeyBytes); err != nil {
			return err
		}
	}
	return validateRead("read", r.GetRead())
}

func validateGetOffsets(r *statedv1.GetOffsetsRequest) error {
	if err := validateGroup("group", r.GetGroup()); err != nil {
		return err
	}
	return validateRead("read", r.GetRead())
}

// kindString names a Kind, including values this build does not know.
func kindString(k statedv1.Kind) string {
	if _, ok := statedv1.Kind_name[int32(k)]; ok {
		return k.String()
	}
	return fmt.Sprintf("unknown kind %d", int32(k))
}

func validateClaim(r *statedv1.ClaimRequest) error {
	return validatePartitions(r.GetGroup(), r.GetOwner(), len(r.GetPartitions()), func(i int) (string, int32) {
		p := r.GetPartitions()[i]
		return p.GetTopic(), p.GetPartition()
	})
}

func validateRelease(r *statedv1.ReleaseRequest) error {
	return validatePartitions(r.GetGroup(), r.GetOwner(), len(r.GetPartitions()), func(i int) (string, int32) {
		p := r.GetPartitions()[i]
		return p.GetTopic(), p.GetPartition()
	})
}

// validatePartitions checks the group, owner and partitions of a claim or
// a release; part returns partition i.
func validatePartitions(group, owner string, n int, part func(int) (string, int32)) error {
	if err := validateGroup("group", group); err != nil {
		return err
	}
	if err := validateClientID("owner", owner); err != nil {
		return err
	}
	switch {
	case n == 0:
		return invalid("partitions", "empty")
	case n > MaxOffsetsPerCommit:
		return invalid("partitions", "%d partitions, limit %d", n, MaxOffsetsPerCommit)
	}
	type tp struct {
		topic     string
		partition int32
	}
	seen := make(map[tp]int, n)
	for i := range n {
		topic, p := part(i)
		if err := validateTopic(fmt.Sprintf("partitions[%d].topic", i), topic); err != nil {
			return err
		}
		if p < 0 {
			return invalid(fmt.Sprintf("partitions[%d].partition", i), "negative (%d)", p)
		}
		if j, dup := seen[tp{topic, p}]; dup {
			return invalid(fmt.Sprintf("partitions[%d]", i), "duplicate of partitions[%d] (topic %q, partition %d)", j, topic, p)
		}
		seen[tp{topic, p}] = i
	}
	return nil
}
