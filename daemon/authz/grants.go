package authz

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	yaml "sigs.k8s.io/yaml/goyaml.v2"
)

// Operation is what a call does to a namespace.
type Operation string

// The operations a grant may hold.
const (
	Read  Operation = "read"
	Write Operation = "write"
	Admin Operation = "admin"
)

// GroupNamespace is the namespace a consumer group's offsets and claims
// are granted as.
func GroupNamespace(group string) string { return "kafka-group/" + group }

// Grant is one entry of a token file.
type Grant struct {
	// Name identifies the grant in errors and logs; it is not secret.
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the token: printf %s "$TOKEN" | sha256sum.
	SHA256 string `yaml:"sha256"`
	// Namespaces are exact names, prefixes ending in "*", or "*" for all.
	Namespaces []string `yaml:"namespaces"`
	// Operations are among read, write and admin.
	Operations []Operation `yaml:"operations"`
}

// Grants are the parsed grants of one token file.
type Grants struct {
	list   []Grant
	hashes [][sha256.Size]byte
}

// ParseFile reads and parses a token file. Errors name the file, and the
// grant and field at fault.
func ParseFile(path string) (*Grants, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authz: token file %s: %w", path, err)
	}
	g, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("authz: token file %s: %w", path, err)
	}
	return g, nil
}

// Parse parses a token file's bytes: a YAML list of grants. Unknown keys,
// a hash that is not 64 hex digits, an unknown operation, an empty name,
// namespaces or operations, and two grants with the same name or hash are
// errors.
func Parse(data []byte) (*Grants, error) {
	if err := checkShapes(data); err != nil {
		return nil, err
	}
	var list []Grant
	if err := yaml.UnmarshalStrict(data, &list); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 || len(list) == 0 {
		return nil, errors.New("no grants: want a YAML list of {name, sha256, namespaces, operations}")
	}
	g := &Grants{list: list}
	names := map[string]bool{}
	seen := map[[sha256.Size]byte]string{}
	var errs []error
	for i, gr := range list {
		id := fmt.Sprintf("grant %d (%q)", i, gr.Name)
		if gr.Name == "" {
			errs = append(errs, fmt.Errorf("grant %d: name is empty", i))
		} else if names[gr.Name] {
			errs = append(errs, fmt.Errorf("%s: name is used by an earlier grant", id))
		}
		names[gr.Name] = true
		var h [sha256.Size]byte
		raw, err := hex.DecodeString(gr.SHA256)
		if err != nil || len(raw) != sha256.Size {
			errs = append(errs, fmt.Errorf("%s: sha256: want the 64 hex digits of the token's SHA-256 (printf %%s \"$TOKEN\" | sha256sum)", id))
		} else if [sha256.Size]byte(raw) == emptyTokenHash {
			errs = append(errs, fmt.Errorf("%s: sha256: the SHA-256 of an empty token (was $TOKEN set when it was hashed?)", id))
		} else {
			copy(h[:], raw)
			if other, dup := seen[h]; dup {
				errs = append(errs, fmt.Errorf("%s: sha256: same token as grant %q", id, other))
			}
			seen[h] = gr.Name
		}
		g.hashes = append(g.hashes, h)
		if len(gr.Namespaces) == 0 {
			errs = append(errs, fmt.Errorf("%s: namespaces is empty: list names, prefixes ending in *, or \"*\"", id))
		}
		for j, ns := range gr.Namespaces {
			if ns == "" || strings.Contains(strings.TrimSuffix(ns, "*"), "*") {
				errs = append(errs, fmt.Errorf("%s: namespaces[%d] %q: want a name, a prefix ending in *, or \"*\"", id, j, ns))
			}
		}
		if len(gr.Operations) == 0 {
			errs = append(errs, fmt.Errorf("%s: operations is empty: list read, write or admin", id))
		}
		for j, op := range gr.Operations {
			if op != Read && op != Write && op != Admin {
				errs = append(errs, fmt.Errorf("%s: operations[%d] %q: want read, write or admin", id, j, op))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return g, nil
}

// emptyTokenHash is the SHA-256 of the empty string, which no grant may
// hold: a call without a token is not a call with this one.
var emptyTokenHash = sha256.Sum256(nil)

// checkShapes reports a grant's field of the wrong YAML shape (a scalar
// where a list belongs: `operations: read`) naming the grant and the
// field, which the strict decoding's type errors do not.
func checkShapes(data []byte) error {
	var raw []map[string]any
	if yaml.Unmarshal(data, &raw) != nil {
		return nil // not a list of maps: the strict decoding says why
	}
	var errs []error
	for i, m := range raw {
		name, _ := m["name"].(string)
		id := fmt.Sprintf("grant %d (%q)", i, name)
		for _, f := range []string{"name", "sha256"} {
			if v, ok := m[f]; ok && v != nil {
				if _, isString := v.(string); !isString {
					errs = append(errs, fmt.Errorf("%s: %s: want a string, not %v", id, f, v))
				}
			}
		}
		for _, f := range []string{"namespaces", "operations"} {
			v, ok := m[f]
			if !ok || v == nil {
				continue
			}
			list, isList := v.([]any)
			if !isList {
				errs = append(errs, fmt.Errorf("%s: %s: want a list, such as [%v], not %v", id, f, v, v))
				continue
			}
			for j, e := range list {
				if _, isString := e.(string); !isString {
					errs = append(errs, fmt.Errorf("%s: %s[%d]: want a string, not %v", id, f, j, e))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Len is the number of grants.
func (g *Grants) Len() int { return len(g.list) }

// lookup returns the grant holding token's hash. It compares against every
// grant in constant time, so timing tells nothing about which hash is
// close.
func (g *Grants) lookup(token string) (*Grant, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range g.hashes {
		if subtle.ConstantTimeCompare(sum[:], g.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, false
	}
	return &g.list[found], true
}

// allows reports whether gr holds op on ns, or on any namespace when
// anyNS, or on "*" when cluster.
func (gr *Grant) allows(op Operation, ns string, anyNS, cluster bool) bool {
	hasOp := false
	for _, o := range gr.Operations {
		hasOp = hasOp || o == op
	}
	if !hasOp {
		return false
	}
	for _, p := range gr.Namespaces {
		switch {
		case p == "*":
			return true
		case cluster:
			// Cluster-wide operations need "*".
		case anyNS:
			return true
		case strings.HasSuffix(p, "*") && strings.HasPrefix(ns, strings.TrimSuffix(p, "*")):
			return true
		case p == ns:
			return true
		}
	}
	return false
}
