package uploader_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/statedhq/stated/uploader"
)

// fakeKMS speaks enough of the AWS KMS JSON API (TrentService.Encrypt and
// Decrypt) for gocloud's awskms keeper: it seals with AES-GCM under a key
// of its own, binding the ciphertext to the key id, as KMS does.
type fakeKMS struct {
	aead cipher.AEAD
	mu   sync.Mutex
	ops  []string // "Encrypt alias/x", "Decrypt alias/x"
	auth []string // Authorization headers seen
}

func newFakeKMS(t *testing.T) (*fakeKMS, *httptest.Server) {
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKMS{aead: aead}
	srv := httptest.NewServer(k) // 127.0.0.1
	t.Cleanup(srv.Close)
	return k, srv
}

func (k *fakeKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		KeyId          string
		Plaintext      []byte // base64 in JSON, as KMS's blobs are
		CiphertextBlob []byte
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		kmsError(w, "ValidationException", err.Error())
		return
	}
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	k.mu.Lock()
	k.auth = append(k.auth, r.Header.Get("Authorization"))
	k.mu.Unlock()
	var resp map[string]any
	switch op {
	case "Encrypt":
		nonce := make([]byte, k.aead.NonceSize())
		rand.Read(nonce)
		// The blob: key id, NUL, nonce, sealed data key.
		blob := append(append([]byte(req.KeyId), 0), nonce...)
		blob = k.aead.Seal(blob, nonce, req.Plaintext, []byte(req.KeyId))
		resp = map[string]any{"CiphertextBlob": blob, "KeyId": req.KeyId, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
	case "Decrypt":
		id, rest, ok := bytes.Cut(req.CiphertextBlob, []byte{0})
		if !ok || len(rest) < k.aead.NonceSize() {
			kmsError(w, "InvalidCiphertextException", "not a ciphertext of this KMS")
			return
		}
		req.KeyId = string(id)
		plain, err := k.aead.Open(nil, rest[:k.aead.NonceSize()], rest[k.aead.NonceSize():], id)
		if err != nil {
			kmsError(w, "InvalidCiphertextException", "the ciphertext does not open")
			return
		}
		resp = map[string]any{"Plaintext": plain, "KeyId": req.KeyId, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
	default:
		kmsError(w, "UnknownOperationException", op)
		return
	}
	k.mu.Lock()
	k.ops = append(k.ops, op+" "+req.KeyId)
	k.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	json.NewEncoder(w).Encode(resp)
}

func kmsError(w http.ResponseWriter, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

// awsEnv gives the AWS SDK static credentials from the environment and
// keeps it off the instance metadata service and the user's files.
func awsEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDSTATEDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

func TestAWSKMSKeeperSealsACheckpointThroughTheKeyService(t *testing.T) {
	awsEnv(t)
	kms, srv := newFakeKMS(t)
	keyURL := "awskms://alias/stated-checkpoints?region=us-east-1&endpoint=" + srv.URL

	b := open(t, fileURL(t.TempDir()))
	dir, files := checkpointDir(t, mrand.New(mrand.NewPCG(5, 6)), 3)
	m, _, err := newUploader(t, b, withKey(t, keyURL)).Upload(testCtx(t), dir, meta(1), nil)
	if err != nil {
		t.Fatalf("upload through awskms: %v", err)
	}
	if m.Encryption == nil || m.Encryption.Keeper != "awskms" {
		t.Fatalf("manifest encryption = %+v, want keeper awskms", m.Encryption)
	}
	dst := t.TempDir()
	if _, err := newUploader(t, b, withKey(t, keyURL)).Download(testCtx(t), m, dst, nil); err != nil {
		t.Fatalf("download through awskms: %v", err)
	}
	sameFiles(t, dst, files)

	kms.mu.Lock()
	defer kms.mu.Unlock()
	var enc, dec int
	for _, op := range kms.ops {
		switch op {
		case "Encrypt alias/stated-checkpoints":
			enc++
		case "Decrypt alias/stated-checkpoints":
			dec++
		default:
			t.Errorf("the key service saw %q", op)
		}
	}
	if enc == 0 || dec == 0 {
		t.Fatalf("the key service saw %d Encrypt and %d Decrypt calls of the key, want both", enc, dec)
	}
	for _, a := range kms.auth {
		if !strings.Contains(a, "Credential=AKIDSTATEDTEST/") {
			t.Fatalf("a request was not signed with the environment's credentials: %q", a)
		}
	}
	// Without the key service's key there is no restore: the checkpoint
	// is not readable with a local key either.
	if _, err := newUploader(t, b, withKey(t, testKeyURL)).Download(testCtx(t), m, filepath.Join(t.TempDir(), "r"), nil); err == nil {
		t.Fatal("a checkpoint sealed by the key service restored with a local key")
	}
}

func TestOpenKeeperKnowsTheCloudKeyServicesAndNamesTheirURLForms(t *testing.T) {
	awsEnv(t)
	// No Google credentials file: the error is about credentials, found
	// without asking the network.
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "no-such-credentials.json"))
	for _, tc := range []struct {
		url, want string // want "" opens
	}{
		{"awskms://alias/x?region=us-east-1", ""},
		{"awskms:///arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab?region=us-east-1", ""},
		{"awskms://", "want awskms://<key id or alias/name>"},
		{"awskms://alias/x?region=us-east-1&colour=blue", "colour"},
		{"azurekeyvault://myvault.vault.azure.net/keys/ckpt", ""},
		{"azurekeyvault://myvault.vault.azure.net/keys/ckpt/0123456789abcdef", ""},
		{"azurekeyvault://myvault.vault.azure.net/secrets/ckpt", "want azurekeyvault://<vault>.vault.azure.net/keys/<key>"},
		{"azurekeyvault://example.com/keys/ckpt", "want azurekeyvault://<vault>.vault.azure.net/keys/<key>"},
		{"azurekeyvault://myvault.vault.azure.net/keys/ckpt?algorithm=RSA1_5&x=1", `invalid query parameter "x"`},
		{"gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k", "Google Cloud credentials"},
		{"gcpkms://projects/p/keyRings/r", "want gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K"},
		{"gcpkms://", "want gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K"},
		{"hashivault://k", "unknown scheme"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			k, scheme, err := uploader.OpenKeeper(context.Background(), tc.url)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("OpenKeeper: %v", err)
				}
				k.Close()
				if want, _, _ := strings.Cut(tc.url, "://"); scheme != want {
					t.Fatalf("scheme %q, want %q", scheme, want)
				}
				return
			}
			if err == nil {
				k.Close()
				t.Fatalf("OpenKeeper succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenKeeper: %v, want it to contain %q", err, tc.want)
			}
			if tc.want != "unknown scheme" && strings.Contains(err.Error(), "unknown scheme") {
				t.Fatalf("a known scheme is called unknown: %v", err)
			}
		})
	}
}
