package secrets_test

import (
	"crypto/rand"
	"testing"

	"github.com/google/uuid"

	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
)

func benchKeyring(b *testing.B) *secrets.Keyring {
	b.Helper()
	current, older := make([]byte, secrets.KeySize), make([]byte, secrets.KeySize)
	_, _ = rand.Read(current)
	_, _ = rand.Read(older)
	kr, err := secrets.New(current, older)
	if err != nil {
		b.Fatal(err)
	}
	return kr
}

// What a claim adds in Go for a key with a secret: opening it.
func BenchmarkOpen(b *testing.B) {
	kr := benchKeyring(b)
	row := uuid.New()
	sealed, err := kr.Seal(row, []byte("sk-live-0123456789abcdef0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := kr.Open(row, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// What an import adds in Go per key: sealing, and the digests under both
// configured keys for the duplicate check.
func BenchmarkSealAndDigests(b *testing.B) {
	kr := benchKeyring(b)
	row := uuid.New()
	secret := []byte("sk-live-0123456789abcdef0123456789abcdef")
	for b.Loop() {
		if _, err := kr.Seal(row, secret); err != nil {
			b.Fatal(err)
		}
		if _, err := kr.Digests(secret); err != nil {
			b.Fatal(err)
		}
	}
}
