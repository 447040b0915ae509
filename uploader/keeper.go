package uploader

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"

	"gocloud.dev/gcp"
	"gocloud.dev/secrets"
	"gocloud.dev/secrets/awskms"
	"gocloud.dev/secrets/azurekeyvault"
	"gocloud.dev/secrets/gcpkms"
	"gocloud.dev/secrets/localsecrets"

	"github.com/statedhq/stated/internal/redact"
)

// KeeperSchemes are the secrets URL schemes OpenKeeper opens.
var KeeperSchemes = []string{localsecrets.Scheme, awskms.Scheme, gcpkms.Scheme, azurekeyvault.Scheme}

// KeyURLForms says how each scheme's URL is written and where its
// credentials come from, for flag help and errors.
const KeyURLForms = `base64key://<32 bytes in base64> (the key itself: tests and local use); ` +
	`awskms://<key id or alias/name>?region=R, or awskms:///<key ARN> (AWS KMS; credentials from the AWS SDK's default chain: ` +
	`AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ?profile=, web identity, the instance role; ?endpoint= for a KMS-compatible service); ` +
	`gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K (Google Cloud KMS; Application Default Credentials: ` +
	`GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, the workload's service account); ` +
	`azurekeyvault://<vault>.vault.azure.net/keys/<key>[/<version>] (Azure Key Vault, RSA-OAEP-256 unless ?algorithm=; ` +
	`DefaultAzureCredential: AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, workload or managed identity, az login)`

// OpenKeeper opens the secrets keeper of a checkpoint key URL (see
// KeyURLForms) and returns it with its scheme for Config.KeeperScheme. An
// unknown scheme, a malformed URL or a bad key is an error that names the
// URL with its key masked: never a fallback to plaintext. A cloud key
// service is not contacted here: its credentials and the key's existence
// are checked at the first checkpoint or restore.
func OpenKeeper(ctx context.Context, rawURL string) (*secrets.Keeper, string, error) {
	shown := redact.URL(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", fmt.Errorf("uploader: key URL %q does not parse", shown)
	}
	// Each URL is opened here rather than through gocloud's default mux,
	// whose errors quote the URL, key included.
	var k *secrets.Keeper
	switch u.Scheme {
	case localsecrets.Scheme:
		k, err = openLocalKeeper(rawURL)
	case awskms.Scheme:
		k, err = openAWSKeeper(ctx, u)
	case gcpkms.Scheme:
		k, err = openGCPKeeper(ctx, u)
	case azurekeyvault.Scheme:
		k, err = openAzureKeeper(ctx, u)
	default:
		supported := strings.Join(KeeperSchemes, "://, ") + "://"
		return nil, "", fmt.Errorf("uploader: key URL %q: unknown scheme %q; supported: %s", shown, u.Scheme, supported)
	}
	if err != nil {
		return nil, "", fmt.Errorf("uploader: key URL %q: %w", shown, redact.Error(err, rawURL))
	}
	return k, u.Scheme, nil
}

// openLocalKeeper opens base64key://. An empty key would make gocloud
// draw a random one: a checkpoint nobody could restore. Both base64
// alphabets are taken.
func openLocalKeeper(rawURL string) (*secrets.Keeper, error) {
	text := strings.TrimPrefix(rawURL, localsecrets.Scheme+"://")
	key, err := localsecrets.Base64Key(text)
	if err != nil {
		key, err = localsecrets.Base64KeyStd(text)
	}
	if err != nil || text == "" {
		return nil, fmt.Errorf("want base64key:// and 32 bytes in base64 (e.g. from `openssl rand -base64 32`)")
	}
	return localsecrets.NewKeeper(key), nil
}

// openAWSKeeper opens awskms://: the host and path are the key id, alias
// or ARN; the query takes gocloud's AWS parameters (region, profile,
// endpoint, ...) and context_* encryption context.
func openAWSKeeper(ctx context.Context, u *url.URL) (*secrets.Keeper, error) {
	if strings.TrimPrefix(path.Join(u.Host, u.Path), "/") == "" {
		return nil, fmt.Errorf("no key: want awskms://<key id or alias/name>?region=R or awskms:///<key ARN>")
	}
	return (&awskms.URLOpener{}).OpenKeeperURL(ctx, u)
}

// gcpKeyRE is a Cloud KMS key's resource name.
var gcpKeyRE = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$`)

// openGCPKeeper opens gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K
// with Application Default Credentials.
func openGCPKeeper(ctx context.Context, u *url.URL) (*secrets.Keeper, error) {
	if !gcpKeyRE.MatchString(path.Join(u.Host, u.Path)) {
		return nil, fmt.Errorf("want gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K")
	}
	creds, err := gcp.DefaultCredentials(ctx)
	if err != nil {
		return nil, fmt.Errorf("Google Cloud credentials (Application Default Credentials): %w", err)
	}
	client, _, err := gcpkms.Dial(ctx, creds.TokenSource)
	if err != nil {
		return nil, fmt.Errorf("Google Cloud KMS client: %w", err)
	}
	return (&gcpkms.URLOpener{Client: client}).OpenKeeperURL(ctx, u)
}

// azureVaultHostRE is a Key Vault's host name, as gocloud wants it.
var azureVaultHostRE = regexp.MustCompile(`^[^/]+\.vault\.[a-z\d-.]+$`)

// openAzureKeeper opens azurekeyvault://<vault>.vault.azure.net/keys/<key>[/<version>]
// with DefaultAzureCredential.
func openAzureKeeper(ctx context.Context, u *url.URL) (*secrets.Keeper, error) {
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if !azureVaultHostRE.MatchString(u.Host) || len(parts) < 2 || len(parts) > 3 || parts[0] != "keys" || parts[1] == "" {
		return nil, fmt.Errorf("want azurekeyvault://<vault>.vault.azure.net/keys/<key>[/<version>]")
	}
	return (&azurekeyvault.URLOpener{ClientMaker: azurekeyvault.DefaultClientMaker}).OpenKeeperURL(ctx, u)
}
