package uploader

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"gocloud.dev/secrets"
	"gocloud.dev/secrets/localsecrets"

	"github.com/statedhq/stated/internal/redact"
)

// KeeperSchemes are the secrets URL schemes OpenKeeper opens. The cloud
// key services (awskms, gcpkms, azurekeyvault) would each bring SDK
// modules this build does not carry.
var KeeperSchemes = []string{localsecrets.Scheme}

// OpenKeeper opens the secrets keeper of a checkpoint key URL, e.g.
// base64key://<32 bytes, base64>, and returns it with its scheme for
// Config.KeeperScheme. An unknown scheme or a bad key is an error that
// names the URL with its key masked: never a fallback to plaintext.
func OpenKeeper(ctx context.Context, rawURL string) (*secrets.Keeper, string, error) {
	shown := redact.URL(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", fmt.Errorf("uploader: key URL %q does not parse", shown)
	}
	supported := strings.Join(KeeperSchemes, "://, ") + "://"
	if u.Scheme != localsecrets.Scheme {
		return nil, "", fmt.Errorf("uploader: key URL %q: unknown scheme %q; supported: %s", shown, u.Scheme, supported)
	}
	// Open the URL ourselves rather than through gocloud's default mux,
	// whose errors quote the URL, key included.
	// An empty key would make gocloud draw a random one: a checkpoint
	// nobody could restore. Both base64 alphabets are taken.
	text := strings.TrimPrefix(rawURL, localsecrets.Scheme+"://")
	key, err := localsecrets.Base64Key(text)
	if err != nil {
		key, err = localsecrets.Base64KeyStd(text)
	}
	if err != nil || text == "" {
		return nil, "", fmt.Errorf("uploader: key URL %q: want base64key:// and 32 bytes in base64 (e.g. from `openssl rand -base64 32`)", shown)
	}
	return localsecrets.NewKeeper(key), u.Scheme, nil
}
