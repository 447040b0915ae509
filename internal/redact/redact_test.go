package redact

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestURLMasksEveryCredentialAndKeepsTheRest(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"file:///var/lib/stated/checkpoints", "file:///var/lib/stated/checkpoints"},
		{"mem://", "mem://"},
		{"s3://ckpt?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1",
			"s3://ckpt?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1"},
		{"s3://ckpt?endpoint=http://127.0.0.1:9000&access_key_id=AKIA123&secret_access_key=SECRET&region=us-east-1",
			"s3://ckpt?endpoint=http://127.0.0.1:9000&access_key_id=***&secret_access_key=***&region=us-east-1"},
		{"s3://minio:hunter2@ckpt?region=x", "s3://***@ckpt?region=x"},
		{"s3://ckpt?endpoint=http%3A%2F%2Fadmin%3Ahunter2%40127.0.0.1%3A9000", "s3://ckpt?endpoint=http%3A%2F%2F***%40127.0.0.1%3A9000"},
		{"azblob://c?sv=2020&sig=abc%2Fdef&sas_token=zzz", "azblob://c?sv=2020&sig=***&sas_token=***"},
		{"gs://b?session_token=T&Password=P&x-amz-credential=C", "gs://b?session_token=***&Password=***&x-amz-credential=***"},
		{"base64key://smGbjm71Nxd1Ig5FS0wj9SlbzAIrnolCz9bQQ6uAhl4=", "base64key://***"},
		{"s3://b?secret_access_key=%zz", "s3://b?secret_access_key=***"},
		{"s3://us:er@b/%zz", "s3://***"},
		{"not a url", "not a url"},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestURLNeverReturnsTheSecret(t *testing.T) {
	for _, in := range []string{
		"s3://AKIA:hunter2@b",
		"s3://b?secret_access_key=hunter2",
		"s3://b?endpoint=https://u:hunter2@h",
		"s3://u:hunter2@b?%zz",
		"base64key://hunter2",
		"http://[::1%hunter2",
	} {
		if got := URL(in); strings.Contains(got, "hunter2") {
			t.Errorf("URL(%q) = %q, which holds the secret", in, got)
		}
	}
}

func TestSensitiveNames(t *testing.T) {
	for name, want := range map[string]bool{
		"secret_access_key": true, "access_key_id": true, "sas_token": true, "sig": true,
		"tls-key": true, "token-file": true, "Password": true,
		"node-id": false, "checkpoint-url": false, "endpoint": false, "region": false, "join": false,
	} {
		if got := Sensitive(name); got != want {
			t.Errorf("Sensitive(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestErrorMasksTheURLsItQuotesAndStillUnwraps(t *testing.T) {
	inner := errors.New("unknown query parameter")
	raw := "s3://u:hunter2@b?secret_access_key=hunter2"
	err := Error(fmt.Errorf("open bucket %s: %w", raw, inner), raw)
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "s3://***@b?secret_access_key=***") {
		t.Errorf("Error = %q", err)
	}
	if !errors.Is(err, inner) {
		t.Error("the masked error does not unwrap to its cause")
	}
	if Error(nil, raw) != nil || Error(inner, raw) != inner {
		t.Error("an error without the URL changed")
	}
}
