// Package tlsutil holds certificates that reload from their files.
//
// A Reloader loads a certificate, its key and optionally a CA bundle from
// files, and Reload re-reads them and swaps them in atomically. A new pair
// that does not parse, whose key does not match its certificate, or whose
// certificate is expired or not yet valid is refused and the old one stays
// in use. The tls.Config values it builds read the current certificate and
// CA on every handshake, so new connections use what was loaded last and
// established connections keep theirs. Errors name the flag each file came
// from. It never falls back to plaintext: that is the caller's choice and
// callers must not make it.
package tlsutil
