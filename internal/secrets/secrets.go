// Package secrets seals the credentials that keys carry: AES-256-GCM with a
// random nonce per seal, and a keyed digest (HMAC-SHA256) that finds
// duplicates without storing anything that reveals a secret.
//
// A Keyring holds the current encryption key, which seals, and older keys,
// which still open rows sealed before a rotation. Each key has an id
// derived from the key itself (the first 8 bytes of an HKDF output, in
// hex), stored beside every row it sealed: operators never choose ids, and
// two configurations that name the same key agree on its id.
//
// Nothing in this package prints, logs or returns key material: a Keyring
// formats as its key ids only.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/uuid"
)

// KeySize is the size of an encryption key: 32 bytes, AES-256.
const KeySize = 32

// Errors of the package.
var (
	// ErrNoKey: no encryption key is configured, so nothing can be sealed.
	ErrNoKey = errors.New("no encryption key configured")
	// ErrUnknownKey: a row was sealed under a key that is not configured
	// (neither the current key nor an older one).
	ErrUnknownKey = errors.New("the row was sealed under an encryption key that is not configured")
	// ErrOpen: a ciphertext does not open: it was altered, or moved to
	// another row.
	ErrOpen = errors.New("the secret does not decrypt")
)

// HKDF labels: each use of a key gets a key of its own.
const (
	infoID     = "token-orchestrator key id v1"
	infoDigest = "token-orchestrator secret digest v1"
	adPrefix   = "token-orchestrator secret v1"
)

// key is one configured encryption key.
type key struct {
	id        string
	aead      cipher.AEAD
	digestKey []byte
}

// Keyring seals with its current key and opens with any of its keys. The
// zero value and nil hold no key: every seal fails with ErrNoKey.
type Keyring struct {
	current *key
	keys    map[string]*key
	// order is current first, then older keys as configured.
	order []*key
}

// New builds a keyring from the current key and older keys that must still
// open rows, each 32 raw bytes. An older key equal to the current one is
// ignored.
func New(current []byte, older ...[]byte) (*Keyring, error) {
	kr := &Keyring{keys: map[string]*key{}}
	for i, raw := range append([][]byte{current}, older...) {
		k, err := newKey(raw)
		if err != nil {
			if i == 0 {
				return nil, fmt.Errorf("current key: %w", err)
			}
			return nil, fmt.Errorf("older key %d: %w", i, err)
		}
		if _, seen := kr.keys[k.id]; seen {
			continue
		}
		kr.keys[k.id] = k
		kr.order = append(kr.order, k)
	}
	kr.current = kr.order[0]
	return kr, nil
}

func newKey(raw []byte) (*key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("must be %d bytes, got %d", KeySize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	idBytes, err := hkdf.Key(sha256.New, raw, nil, infoID, 8)
	if err != nil {
		return nil, err
	}
	digestKey, err := hkdf.Key(sha256.New, raw, nil, infoDigest, 32)
	if err != nil {
		return nil, err
	}
	return &key{id: hex.EncodeToString(idBytes), aead: aead, digestKey: digestKey}, nil
}

// ParseKey decodes one key written in standard base64 (surrounding space
// ignored). Its error never quotes the value.
func ParseKey(encoded string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return nil, errors.New("is not standard base64 (generate one with: openssl rand -base64 32)")
	}
	if len(raw) != KeySize {
		return nil, fmt.Errorf("must decode to %d bytes, got %d (generate one with: openssl rand -base64 32)", KeySize, len(raw))
	}
	return raw, nil
}

// WithoutOlder returns a keyring of the current key alone, as a
// configuration looks once a rotation is done and the older keys removed.
func (kr *Keyring) WithoutOlder() *Keyring {
	if !kr.Enabled() {
		return kr
	}
	return &Keyring{current: kr.current, keys: map[string]*key{kr.current.id: kr.current}, order: []*key{kr.current}}
}

// Enabled reports whether the keyring can seal.
func (kr *Keyring) Enabled() bool { return kr != nil && kr.current != nil }

// CurrentID is the id of the key that seals; empty without one.
func (kr *Keyring) CurrentID() string {
	if !kr.Enabled() {
		return ""
	}
	return kr.current.id
}

// IDs lists the ids of every key, the current one first.
func (kr *Keyring) IDs() []string {
	if !kr.Enabled() {
		return nil
	}
	ids := make([]string, len(kr.order))
	for i, k := range kr.order {
		ids[i] = k.id
	}
	return ids
}

// String names the keys by id only, so that a keyring printed by mistake
// shows no key material.
func (kr *Keyring) String() string {
	if !kr.Enabled() {
		return "secrets.Keyring(none)"
	}
	return "secrets.Keyring(" + strings.Join(kr.IDs(), ",") + ")"
}

// GoString is String, for %#v.
func (kr *Keyring) GoString() string { return kr.String() }

// LogValue is String, for slog.
func (kr *Keyring) LogValue() slog.Value { return slog.StringValue(kr.String()) }

// Sealed is a secret as stored: the id of the key that sealed it, and the
// nonce followed by the ciphertext and tag.
type Sealed struct {
	KeyID      string
	Ciphertext []byte
}

// additionalData binds a ciphertext to its key id and to the key row it
// belongs to: moved to another row, or relabelled with another key id, it
// no longer opens.
func additionalData(keyID string, row uuid.UUID) []byte {
	ad := make([]byte, 0, len(adPrefix)+1+len(keyID)+1+16)
	ad = append(ad, adPrefix...)
	ad = append(ad, 0)
	ad = append(ad, keyID...)
	ad = append(ad, 0)
	return append(ad, row[:]...)
}

// Seal encrypts the secret of the key row under the current key.
func (kr *Keyring) Seal(row uuid.UUID, secret []byte) (Sealed, error) {
	if !kr.Enabled() {
		return Sealed{}, ErrNoKey
	}
	k := kr.current
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(secret)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return Sealed{}, err
	}
	return Sealed{KeyID: k.id, Ciphertext: k.aead.Seal(nonce, nonce, secret, additionalData(k.id, row))}, nil
}

// Open decrypts the secret of the key row.
func (kr *Keyring) Open(row uuid.UUID, s Sealed) ([]byte, error) {
	if kr == nil || kr.keys == nil {
		return nil, ErrUnknownKey
	}
	k, ok := kr.keys[s.KeyID]
	if !ok {
		return nil, ErrUnknownKey
	}
	n := k.aead.NonceSize()
	if len(s.Ciphertext) < n+k.aead.Overhead() {
		return nil, ErrOpen
	}
	plain, err := k.aead.Open(nil, s.Ciphertext[:n], s.Ciphertext[n:], additionalData(s.KeyID, row))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Digest is the secret's keyed digest under the current key: what a row
// stores to find duplicates.
func (kr *Keyring) Digest(secret []byte) ([]byte, error) {
	if !kr.Enabled() {
		return nil, ErrNoKey
	}
	return digest(kr.current, secret), nil
}

// Digests are the secret's digests under every key, the current one first.
// During a rotation rows carry digests under older keys too: a duplicate is
// any row whose digest is one of these.
func (kr *Keyring) Digests(secret []byte) ([][]byte, error) {
	if !kr.Enabled() {
		return nil, ErrNoKey
	}
	out := make([][]byte, len(kr.order))
	for i, k := range kr.order {
		out[i] = digest(k, secret)
	}
	return out, nil
}

func digest(k *key, secret []byte) []byte {
	mac := hmac.New(sha256.New, k.digestKey)
	mac.Write(secret)
	return mac.Sum(nil)
}
