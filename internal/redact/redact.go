// Package redact masks credentials in text that stated prints or logs:
// bucket and secrets URLs given on the command line, in the environment or
// in a config file. Its output is for people; it is never parsed back into
// a working URL.
//
// It must never return the secret it was given, even for input it cannot
// parse: such input is masked whole rather than passed through.
package redact

import (
	"net/url"
	"strings"
)

// Mask replaces a secret.
const Mask = "***"

// sensitiveWords mark a name (a query parameter, a flag, a config key)
// whose value is a credential.
var sensitiveWords = []string{"secret", "token", "password", "passwd", "key", "sas", "sig", "credential", "auth"}

// Sensitive reports whether a value named name is a credential: whether
// the name, in any case, contains secret, token, password, key, sas, sig,
// credential or auth (access_key_id, secret_access_key, sas_token, sig,
// tls-key, token-file).
func Sensitive(name string) bool {
	name = strings.ToLower(name)
	for _, w := range sensitiveWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// keySchemes carry the key itself in the URL, after the scheme.
var keySchemes = map[string]bool{"base64key": true, "stringkey": true}

// URL returns raw with every credential in it masked: the user
// information (user:password@), the whole of a base64key:// URL, the
// value of every query parameter whose name is Sensitive, and URLs nested
// in query values (endpoint=http://user:pass@host). The rest keeps its
// text and order. Text that is not a URL comes back unchanged unless it
// looks like one that cannot be parsed, which comes back masked after its
// scheme.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.Index(raw, "://"); i >= 0 {
			return raw[:i] + "://" + Mask
		}
		return Mask
	}
	if keySchemes[strings.ToLower(u.Scheme)] {
		return u.Scheme + "://" + Mask
	}
	// Mask in the text itself, so that what needs no mask keeps its form.
	s := raw
	if u.User != nil {
		i := strings.Index(s, "://")
		if i < 0 {
			return Mask
		}
		host := s[i+3:]
		if end := strings.IndexAny(host, "/?#"); end >= 0 {
			host = host[:end]
		}
		at := strings.LastIndex(host, "@")
		if at < 0 {
			return Mask
		}
		s = s[:i+3] + Mask + s[i+3+at:]
	}
	if u.RawQuery != "" {
		s = strings.Replace(s, "?"+u.RawQuery, "?"+query(u.RawQuery), 1)
	}
	return s
}

// query masks the sensitive values of a raw query, keeping its order.
func query(raw string) string {
	if raw == "" {
		return raw
	}
	pairs := strings.Split(raw, "&")
	for i, p := range pairs {
		name, value, hasValue := strings.Cut(p, "=")
		decodedName, err := url.QueryUnescape(name)
		if err != nil {
			decodedName = name
		}
		switch {
		case !hasValue:
		case Sensitive(decodedName):
			pairs[i] = name + "=" + Mask
		default:
			v, err := url.QueryUnescape(value)
			if err != nil {
				pairs[i] = name + "=" + Mask
				continue
			}
			if strings.Contains(v, "://") || strings.Contains(v, "@") {
				if r := URL(v); r != v {
					// Keep the mask readable: QueryEscape would write %2A.
					pairs[i] = name + "=" + strings.ReplaceAll(url.QueryEscape(r), "%2A", "*")
				}
			}
		}
	}
	return strings.Join(pairs, "&")
}

// Error returns err with each of urls in its message masked by URL, for
// errors from libraries that quote the URL they were given. errors.Is and
// errors.As still see err.
func Error(err error, urls ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, u := range urls {
		if u != "" {
			msg = strings.ReplaceAll(msg, u, URL(u))
		}
	}
	if msg == err.Error() {
		return err
	}
	return &maskedError{msg: msg, err: err}
}

type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }
