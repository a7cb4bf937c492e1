package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
)

// Limits of credentials, labels and cooldowns.
const (
	// MaxSecretBytes is the longest secret a key may carry.
	MaxSecretBytes = 4096
	// MaxLabels is the most labels a key may carry, and a claim may ask for.
	MaxLabels = 16
	// MaxLabelName and MaxLabelValue bound a label's name and value, in bytes.
	MaxLabelName  = 63
	MaxLabelValue = 256
	// MaxCooldown is the longest cooldown a release may ask for.
	MaxCooldown = 24 * time.Hour
)

// Errors about credentials, labels and cooldowns.
var (
	// ErrNoEncryptionKey: a key with a secret was asked for, and no
	// encryption key is configured. Nothing was stored.
	ErrNoEncryptionKey = errors.New("no encryption key is configured for secrets")
	// ErrDuplicateSecret: a key of the pool already carries one of the
	// secrets (or the request names one twice). Nothing was stored.
	ErrDuplicateSecret = errors.New("a key of the pool already carries this secret")
	// ErrInvalidLabel: a label's name or value is empty, too long or has
	// characters outside the allowed set, or there are too many.
	ErrInvalidLabel = errors.New("invalid label")
	// ErrInvalidSecret: a secret is empty or too long.
	ErrInvalidSecret = errors.New("invalid secret")
	// ErrInvalidCooldown: a cooldown below 0 or above MaxCooldown.
	ErrInvalidCooldown = errors.New("invalid cooldown")
	// ErrSecretUnavailable: a key's secret was sealed under an encryption
	// key that is not configured, or does not decrypt.
	ErrSecretUnavailable = errors.New("the key's secret cannot be decrypted with the configured encryption keys")
)

var (
	labelName  = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,63}$`)
	labelValue = regexp.MustCompile(`^[A-Za-z0-9._:/@+-]{1,256}$`)
)

// ValidateLabel checks one label, name and value.
func ValidateLabel(name, value string) error {
	if !labelName.MatchString(name) {
		return fmt.Errorf("%w: the name %q must be 1 to %d letters, digits, '.', '_', '/' or '-'", ErrInvalidLabel, truncate(name), MaxLabelName)
	}
	if !labelValue.MatchString(value) {
		return fmt.Errorf("%w: the value of %q must be 1 to %d letters, digits or any of . _ : / @ + -", ErrInvalidLabel, name, MaxLabelValue)
	}
	return nil
}

// ParseLabel reads a label written name=value, as in ?label=tier=paid.
func ParseLabel(s string) (string, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok {
		return "", fmt.Errorf("%w: %q is not name=value", ErrInvalidLabel, truncate(s))
	}
	if err := ValidateLabel(name, value); err != nil {
		return "", err
	}
	return name + "=" + value, nil
}

func truncate(s string) string {
	if len(s) > 70 {
		return s[:64] + "…"
	}
	return s
}

// NewKey is one key to create with CreateKeys.
type NewKey struct {
	// Secret is the credential the key stands for; empty for none.
	Secret string
	// Labels of the key; nil for none.
	Labels map[string]string
}

// claimTarget is what a claim asks for: a pool and, optionally, labels
// ("name=value", joined by NUL, the first one walked).
type claimTarget struct {
	pool   string
	labels string
}

func newClaimTarget(pool string, labels []string) claimTarget {
	return claimTarget{pool: pool, labels: strings.Join(dedupe(labels), "\x00")}
}

func (t claimTarget) labelList() []string {
	if t.labels == "" {
		return nil
	}
	return strings.Split(t.labels, "\x00")
}

func dedupe(labels []string) []string {
	out := labels[:0:0]
	for _, l := range labels {
		seen := false
		for _, o := range out {
			seen = seen || o == l
		}
		if !seen {
			out = append(out, l)
		}
	}
	return out
}

// claimRows runs the claim: without labels the plain walk of the claimable
// index (KeyClaim), which costs what it cost before labels existed; with
// labels the walk of the first label's index (KeyClaimLabelled).
func (s *Store) claimRows(ctx context.Context, q *dbsqlc.Queries, pool string, labels []string, max int) ([]dbsqlc.KeyClaimRow, error) {
	labels = dedupe(labels)
	if len(labels) == 0 {
		return q.KeyClaim(ctx, dbsqlc.KeyClaimParams{
			Pool: pool, StartPosition: rand.Float64(), Max: int32(max), LeaseTtlSeconds: s.cfg.LeaseTTL.Seconds(),
		})
	}
	rows, err := q.KeyClaimLabelled(ctx, dbsqlc.KeyClaimLabelledParams{
		Pool: pool, Label: labels[0], StartPosition: rand.Float64(), OtherLabels: labels[1:],
		Max: int32(max), LeaseTtlSeconds: s.cfg.LeaseTTL.Seconds(),
	})
	out := make([]dbsqlc.KeyClaimRow, len(rows))
	for i, row := range rows {
		out[i] = dbsqlc.KeyClaimRow(row)
	}
	return out, err
}

// claimedKeys turns claimed rows into keys with their secrets opened. When
// a secret does not open (its encryption key was removed from the
// configuration), every key is released and the claim fails: a client
// must never get a key without the credential it stands for.
func (s *Store) claimedKeys(rows []dbsqlc.KeyClaimRow) ([]Key, error) {
	keys := make([]Key, len(rows))
	var failed error
	for i, row := range rows {
		keys[i] = fromRow(dbsqlc.KeyGetRow{
			ID: row.ID, Pool: row.Pool, CreatedAt: row.CreatedAt, ExpiresAt: row.ExpiresAt,
			LastKeepAliveAt: row.LastKeepAliveAt, Labels: row.Labels, TimesAssigned: row.TimesAssigned,
			LeaseToken: row.LeaseToken, BlockedAt: row.BlockedAt, LeaseExpiresAt: row.LeaseExpiresAt,
			CoolingUntil: row.CoolingUntil,
		})
		if err := s.openSecret(&keys[i], row.SecretKeyID, row.SecretCiphertext); err != nil {
			failed = err
		}
	}
	if failed != nil {
		for _, k := range keys {
			go s.ReleaseAbandoned(k)
		}
		return nil, failed
	}
	return keys, nil
}

// openSecret decrypts a sealed secret into the key, if it has one. The log
// names the key and the encryption key's id, never material.
func (s *Store) openSecret(key *Key, keyID *string, ciphertext []byte) error {
	if keyID == nil || ciphertext == nil {
		return nil
	}
	plain, err := s.cfg.Secrets.Open(key.ID, secrets.Sealed{KeyID: *keyID, Ciphertext: ciphertext})
	if err != nil {
		slog.Error("a key's secret does not decrypt", "key_id", key.ID, "encryption_key_id", *keyID, "error", err)
		return fmt.Errorf("%w: %w", ErrSecretUnavailable, err)
	}
	secret := string(plain)
	key.Secret = &secret
	return nil
}

func decodeLabels(raw []byte) map[string]string {
	if raw == nil {
		return nil
	}
	var labels map[string]string
	if err := json.Unmarshal(raw, &labels); err != nil {
		return nil
	}
	return labels
}

// CreateKeys creates one free key per entry, with its secret (sealed with
// the configured encryption key) and labels, in one statement. It returns
// ErrNoEncryptionKey when a secret is given and no encryption key is
// configured, and ErrDuplicateSecret when a secret is given twice or a key
// of the pool already carries one; nothing is stored then.
func (s *Store) CreateKeys(ctx context.Context, pool string, keys []NewKey) ([]Key, error) {
	if len(keys) < 1 || len(keys) > MaxCreate {
		return nil, fmt.Errorf("%d keys out of range 1..%d", len(keys), MaxCreate)
	}
	args := dbsqlc.KeyCreateWithSecretsParams{
		Pool:          pool,
		KeyTtlSeconds: s.cfg.KeyTTL.Seconds(),
		Ids:           make([]uuid.UUID, len(keys)),
		Labels:        make([]string, len(keys)),
		Ciphertexts:   make([][]byte, len(keys)),
		Digests:       make([][]byte, len(keys)),
		SecretKeyID:   s.cfg.Secrets.CurrentID(),
		AllDigests:    [][]byte{},
		LabelKeyIds:   []uuid.UUID{},
		LabelTexts:    []string{},
	}
	seen := make(map[string]bool)
	for i, k := range keys {
		id := uuid.New()
		args.Ids[i] = id
		if len(k.Labels) > MaxLabels {
			return nil, fmt.Errorf("%w: a key carries at most %d labels, got %d", ErrInvalidLabel, MaxLabels, len(k.Labels))
		}
		if len(k.Labels) > 0 {
			for name, value := range k.Labels {
				if err := ValidateLabel(name, value); err != nil {
					return nil, err
				}
				args.LabelKeyIds = append(args.LabelKeyIds, id)
				args.LabelTexts = append(args.LabelTexts, name+"="+value)
			}
			raw, err := json.Marshal(k.Labels)
			if err != nil {
				return nil, err
			}
			args.Labels[i] = string(raw)
		}
		if k.Secret == "" {
			continue
		}
		if len(k.Secret) > MaxSecretBytes {
			return nil, fmt.Errorf("%w: key %d: a secret is at most %d bytes, got %d", ErrInvalidSecret, i+1, MaxSecretBytes, len(k.Secret))
		}
		if !s.cfg.Secrets.Enabled() {
			return nil, ErrNoEncryptionKey
		}
		sealed, err := s.cfg.Secrets.Seal(id, []byte(k.Secret))
		if err != nil {
			return nil, err
		}
		digests, err := s.cfg.Secrets.Digests([]byte(k.Secret))
		if err != nil {
			return nil, err
		}
		// The current key's digest is first; it is the one stored.
		if seen[string(digests[0])] {
			return nil, fmt.Errorf("%w (keys %d and an earlier one of the request carry the same secret)", ErrDuplicateSecret, i+1)
		}
		seen[string(digests[0])] = true
		args.Ciphertexts[i], args.Digests[i] = sealed.Ciphertext, digests[0]
		args.AllDigests = append(args.AllDigests, digests...)
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	rows, err := retryConflicts(ctx, func() ([]dbsqlc.KeyCreateWithSecretsRow, error) {
		if len(args.AllDigests) == 0 {
			// Nothing to compare: labels only.
			return s.queries.KeyCreateWithSecrets(ctx, args)
		}
		return s.createWithSecrets(ctx, args)
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "keys_pool_secret_digest_idx":
		return nil, ErrDuplicateSecret
	case err != nil:
		return nil, classify(err)
	case len(rows) == 0:
		return nil, ErrDuplicateSecret
	}
	out := make([]Key, len(rows))
	for i, row := range rows {
		out[i] = fromRow(dbsqlc.KeyGetRow(row))
	}
	return out, nil
}

// createWithSecrets creates keys with secrets under the pool's lock for
// secrets, in one transaction: an import on another replica that seals
// under another encryption key (during a rotation) stores another digest
// of the same secret, which the unique index cannot catch, so the two
// duplicate checks must not overlap.
func (s *Store) createWithSecrets(ctx context.Context, args dbsqlc.KeyCreateWithSecretsParams) ([]dbsqlc.KeyCreateWithSecretsRow, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	// After a commit this does nothing.
	defer func() { _ = tx.Rollback(ctx) }()
	q := s.queries.WithTx(tx)
	if err := q.KeyLockPoolSecrets(ctx, args.Pool); err != nil {
		return nil, err
	}
	rows, err := q.KeyCreateWithSecrets(ctx, args)
	if err != nil {
		return nil, err
	}
	return rows, tx.Commit(ctx)
}

// GetSecret returns a live key with its secret, when leaseToken names the
// key's current lease and that lease is running: ErrLeaseMismatch
// otherwise. A key without a secret is returned with Secret nil.
func (s *Store) GetSecret(ctx context.Context, id uuid.UUID, leaseToken int64) (Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.KeyGetSecret(ctx, dbsqlc.KeyGetSecretParams{ID: id, LeaseToken: leaseToken})
	if err != nil {
		return Key{}, classify(err)
	}
	if !row.LeaseCurrent {
		return Key{}, ErrLeaseMismatch
	}
	keyRow, err := s.queries.KeyGet(ctx, id)
	if err != nil {
		return Key{}, classify(err)
	}
	key := fromRow(keyRow)
	if err := s.openSecret(&key, row.SecretKeyID, row.SecretCiphertext); err != nil {
		return Key{}, err
	}
	return key, nil
}

// EndCooldowns makes up to max keys whose cooldown is over claimable again
// and returns how many.
func (s *Store) EndCooldowns(ctx context.Context, max int) (int, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	n, err := retryConflicts(ctx, func() (int64, error) { return s.queries.KeyEndCooldowns(ctx, int32(max)) })
	if err != nil {
		return 0, classify(err)
	}
	return int(n), nil
}

// ResealBatch seals again, under the current encryption key and with new
// digests, up to max secrets sealed under the older key oldKeyID, in one
// short transaction; rows that a request has locked are skipped (a later
// pass takes them). It returns how many it resealed and the last id it
// resealed (the nil UUID when it found none). Resealed rows leave the
// older key's range, so batches resume where the last one ended.
func (s *Store) ResealBatch(ctx context.Context, oldKeyID string, max int) (int, uuid.UUID, error) {
	kr := s.cfg.Secrets
	if !kr.Enabled() {
		return 0, uuid.Nil, ErrNoEncryptionKey
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, uuid.Nil, classify(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	q := s.queries.WithTx(tx)
	rows, err := q.KeySecretsSealedUnder(ctx, dbsqlc.KeySecretsSealedUnderParams{SecretKeyID: oldKeyID, Max: int32(max)})
	if err != nil {
		return 0, uuid.Nil, classify(err)
	}
	if len(rows) == 0 {
		return 0, uuid.Nil, nil
	}
	args := dbsqlc.KeySecretsResealParams{NewKeyID: kr.CurrentID(), OldKeyID: oldKeyID}
	for _, row := range rows {
		plain, err := kr.Open(row.ID, secrets.Sealed{KeyID: oldKeyID, Ciphertext: row.SecretCiphertext})
		if err != nil {
			return 0, uuid.Nil, fmt.Errorf("key %s: %w: %w", row.ID, ErrSecretUnavailable, err)
		}
		sealed, err := kr.Seal(row.ID, plain)
		if err != nil {
			return 0, uuid.Nil, err
		}
		digest, err := kr.Digest(plain)
		if err != nil {
			return 0, uuid.Nil, err
		}
		clear(plain)
		args.Ids = append(args.Ids, row.ID)
		args.Ciphertexts = append(args.Ciphertexts, sealed.Ciphertext)
		args.Digests = append(args.Digests, digest)
	}
	n, err := q.KeySecretsReseal(ctx, args)
	if err != nil {
		return 0, uuid.Nil, classify(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, uuid.Nil, classify(err)
	}
	return int(n), rows[len(rows)-1].ID, nil
}
