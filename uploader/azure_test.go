//go:build linux

package uploader_test

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"gocloud.dev/blob"

	"github.com/statedhq/stated/uploader"
)

// Azurite's well-known development account.
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// TestRoundTripAzure runs against Azurite, Azure Storage's emulator (npm
// package azurite), started on a free loopback port with its data in a
// temporary directory. Without it the test skips and says so; .ci/run
// installs it with npm.
func TestRoundTripAzure(t *testing.T) {
	bin, err := exec.LookPath("azurite-blob")
	if err != nil {
		t.Skip("Azure: Azurite is not installed (no azurite-blob on PATH); `npm install -g azurite` runs this test")
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", port, "--location", t.TempDir(), "--skipApiVersionCheck", "--loose")
	// Azurite dies with the test binary, even one killed by a timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	t.Setenv("AZURE_STORAGE_ACCOUNT", azuriteAccount)
	t.Setenv("AZURE_STORAGE_KEY", azuriteKey)
	ctx := testCtx(t)
	url := "azblob://ckpt?protocol=http&domain=127.0.0.1:" + port + "&localemu=true"
	var b *blob.Bucket
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err = uploader.OpenBucket(ctx, url); err == nil {
			if err = createContainer(ctx, b); err == nil {
				break
			}
			b.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("Azurite on port %s: %v", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { b.Close() })
	roundTrip(t, b, nil)
}

// createContainer creates the bucket's container: Azurite starts with
// none, and the gocloud driver does not create them.
func createContainer(ctx context.Context, b *blob.Bucket) error {
	var c *container.Client
	if !b.As(&c) {
		return errors.New("not an Azure bucket")
	}
	_, err := c.Create(ctx, nil)
	return err
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
