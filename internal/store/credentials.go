package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
)

// NewKey is one key to create with Import.
type NewKey struct {
	// Secret is the credential the key stands for; empty for none.
	Secret string
	// Name of the key, unique in its pool; empty for none.
	Name string
	// Labels of the key; nil for none.
	Labels map[string]string
	// Seats is how many leases may hold the key at once; 0: the pool's
	// policy's, or 1.
	Seats int
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

// openClaimed turns claimed rows into keys with their secrets opened, and
// sets apart the keys whose secret does not open.
func (s *Store) openClaimed(rows []dbsqlc.KeyClaimRow) (opened, unopened []lease.Key) {
	for _, row := range rows {
		key := fromRow(dbsqlc.KeyGetRow{
			ID: row.ID, Pool: row.Pool, CreatedAt: row.CreatedAt, ExpiresAt: row.ExpiresAt,
			LastKeepAliveAt: row.LastKeepAliveAt, Labels: row.Labels, Name: row.Name, SecretHint: row.SecretHint,
			Seats: row.Seats, SeatsHeld: row.SeatsHeld, TimesAssigned: row.TimesAssigned,
			LeaseToken: row.LeaseToken, BlockedAt: row.BlockedAt, LeaseExpiresAt: row.LeaseExpiresAt,
			CoolingUntil: row.CoolingUntil,
		})
		if err := s.openSecret(&key, row.SecretKeyID, row.SecretCiphertext); err != nil {
			unopened = append(unopened, key)
			continue
		}
		opened = append(opened, key)
	}
	return opened, unopened
}

// UnopenedSecretCooldown is how long a key whose secret this server cannot
// open stays out of claims after a claim took it: long enough that claims
// and waiting clients do not take it again and again, short enough that
// it comes back soon after the configuration is mended.
const UnopenedSecretCooldown = time.Minute

// setAside releases the claimed keys whose secret does not open with a
// cooldown, so that the next claims take other keys instead of the same
// ones in a loop. The other free seats of a key of several seats cool down
// with it (coolFreeSeats). The log names each key (openSecret).
func (s *Store) setAside(ctx context.Context, keys []lease.Key) {
	for _, k := range keys {
		if _, err := s.ReleaseWithCooldown(ctx, k.ID, k.LeaseToken, UnopenedSecretCooldown); err != nil {
			slog.Warn("could not set aside a key whose secret does not open", "key_id", k.ID, "error", err)
		}
	}
	// A key of one seat cools down with its release.
	s.coolFreeSeats(ctx, slices.DeleteFunc(slices.Clone(keys), func(k lease.Key) bool { return k.Seats == 1 }))
}

// coolFreeSeats sets the free seats of keys whose secret does not open
// aside for UnopenedSecretCooldown: the secret is the key's, and claims
// that took its seats one at a time would fail while other keys are free.
// A failure is only logged: the next claim that meets such a seat sets it
// aside.
func (s *Store) coolFreeSeats(ctx context.Context, keys []lease.Key) {
	if len(keys) == 0 {
		return
	}
	ids := make([]uuid.UUID, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	if _, err := s.queries.KeyCoolFreeSeats(ctx, dbsqlc.KeyCoolFreeSeatsParams{
		Ids: ids, CooldownSeconds: UnopenedSecretCooldown.Seconds(),
	}); err != nil {
		slog.Warn("could not set aside the seats of keys whose secret does not open", "key_ids", ids, "error", err)
	}
}

// openSecret decrypts a sealed secret into the key, if it has one. The log
// names the key and the encryption key's id, never material.
func (s *Store) openSecret(key *lease.Key, keyID *string, ciphertext []byte) error {
	if keyID == nil || ciphertext == nil {
		return nil
	}
	plain, err := s.cfg.Secrets.Open(key.ID, secrets.Sealed{KeyID: *keyID, Ciphertext: ciphertext})
	if err != nil {
		slog.Error("a key's secret does not decrypt", "key_id", key.ID, "encryption_key_id", *keyID, "error", err)
		return fmt.Errorf("%w: %w", lease.ErrSecretUnavailable, err)
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

// CreateKeys creates one free key per entry, as Import with no options,
// and returns the keys it created.
func (s *Store) CreateKeys(ctx context.Context, pool string, keys []NewKey) ([]lease.Key, error) {
	res, err := s.Import(ctx, pool, keys, ImportOptions{})
	return res.Keys, err
}

// ImportOptions are the choices of an Import.
type ImportOptions struct {
	// SkipExisting leaves out the keys whose secret or name the pool
	// already has (ImportResult.Skipped), instead of refusing the whole
	// import. Defaults to false.
	SkipExisting bool
	// KeyTTL is the key life of the policy that an import of secrets
	// gives a pool that has none. Defaults to nil: the pool's keys stay.
	KeyTTL *time.Duration
}

// ImportResult is what an Import did.
type ImportResult struct {
	// Keys are the keys created, in the order listed, skipped ones left out.
	Keys []lease.Key
	// Skipped lists the keys left out, by their index in the list.
	Skipped []SkippedKey
	// PolicyCreated: the import gave the pool its policy (keys with
	// secrets in a pool that had none).
	PolicyCreated bool
}

// SkippedKey is a key an Import left out: the pool has a key with its
// secret (Reason "secret") or its name ("name").
type SkippedKey struct {
	Index  int
	Reason string
}

// DuplicateError says which key of an import repeats a secret or a name,
// of the pool (Earlier -1) or of an earlier key of the same list. It wraps
// lease.ErrDuplicateSecret or lease.ErrDuplicateName.
type DuplicateError struct {
	Index   int
	Earlier int
	// Reason is "secret" or "name".
	Reason string
}

func (e *DuplicateError) Error() string {
	if e.Earlier >= 0 {
		return fmt.Sprintf("keys[%d] has the same %s as keys[%d]; nothing was stored", e.Index, e.Reason, e.Earlier)
	}
	return fmt.Sprintf("keys[%d]: a key of the pool already has this %s; nothing was stored", e.Index, e.Reason)
}

func (e *DuplicateError) Unwrap() error {
	if e.Reason == "name" {
		return lease.ErrDuplicateName
	}
	return lease.ErrDuplicateSecret
}

// Import creates one free key per entry, with its secret (sealed with the
// configured encryption key), name and labels, in one statement. It
// returns lease.ErrNoEncryptionKey when a secret is given and no
// encryption key is configured, and a DuplicateError when the list repeats
// a secret or a name, or (unless SkipExisting) the pool already has one;
// nothing is stored then. Keys with secrets in a pool that has no policy
// give it one: keys stay (or live opts.KeyTTL), so that real credentials
// are never deleted because nobody kept them alive; the pool's existing
// keys follow.
func (s *Store) Import(ctx context.Context, pool string, keys []NewKey, opts ImportOptions) (ImportResult, error) {
	if len(keys) < 1 || len(keys) > lease.MaxCreate {
		return ImportResult{}, fmt.Errorf("%d keys out of range 1..%d", len(keys), lease.MaxCreate)
	}
	if opts.KeyTTL != nil {
		if err := (lease.Policy{KeyTTL: opts.KeyTTL}).Validate(); err != nil {
			return ImportResult{}, err
		}
	}
	batch := importBatch{
		ids: make([]uuid.UUID, len(keys)), labels: make([]string, len(keys)), names: make([]string, len(keys)),
		hints: make([]string, len(keys)), ciphertexts: make([][]byte, len(keys)), digests: make([][]byte, len(keys)),
		allDigests: make([][][]byte, len(keys)), seats: make([]int32, len(keys)),
	}
	seenSecrets := make(map[string]int)
	seenNames := make(map[string]int)
	withSecrets := false
	for i, k := range keys {
		id := uuid.New()
		batch.ids[i] = id
		if k.Seats != 0 && (k.Seats < 1 || k.Seats > lease.MaxSeats) {
			return ImportResult{}, fmt.Errorf("%w: keys[%d]: seats must be between 1 and %d, got %d", lease.ErrInvalidSeats, i, lease.MaxSeats, k.Seats)
		}
		if k.Name != "" {
			if err := lease.ValidateName(k.Name); err != nil {
				return ImportResult{}, fmt.Errorf("keys[%d]: %w", i, err)
			}
			if earlier, ok := seenNames[k.Name]; ok {
				return ImportResult{}, &DuplicateError{Index: i, Earlier: earlier, Reason: "name"}
			}
			seenNames[k.Name] = i
			batch.names[i] = k.Name
		}
		if len(k.Labels) > lease.MaxLabels {
			return ImportResult{}, fmt.Errorf("%w: a key carries at most %d labels, got %d", lease.ErrInvalidLabel, lease.MaxLabels, len(k.Labels))
		}
		if len(k.Labels) > 0 {
			for name, value := range k.Labels {
				if err := lease.ValidateLabel(name, value); err != nil {
					return ImportResult{}, err
				}
			}
			raw, err := json.Marshal(k.Labels)
			if err != nil {
				return ImportResult{}, err
			}
			batch.labels[i] = string(raw)
		}
		if k.Secret == "" {
			continue
		}
		if len(k.Secret) > lease.MaxSecretBytes {
			return ImportResult{}, fmt.Errorf("%w: key %d: a secret is at most %d bytes, got %d", lease.ErrInvalidSecret, i+1, lease.MaxSecretBytes, len(k.Secret))
		}
		if !s.cfg.Secrets.Enabled() {
			return ImportResult{}, lease.ErrNoEncryptionKey
		}
		withSecrets = true
		sealed, err := s.cfg.Secrets.Seal(id, []byte(k.Secret))
		if err != nil {
			return ImportResult{}, err
		}
		digests, err := s.cfg.Secrets.Digests([]byte(k.Secret))
		if err != nil {
			return ImportResult{}, err
		}
		// The current key's digest is first; it is the one stored.
		if earlier, ok := seenSecrets[string(digests[0])]; ok {
			return ImportResult{}, &DuplicateError{Index: i, Earlier: earlier, Reason: "secret"}
		}
		seenSecrets[string(digests[0])] = i
		batch.ciphertexts[i], batch.digests[i], batch.allDigests[i] = sealed.Ciphertext, digests[0], digests
		batch.hints[i] = lease.SecretHint(k.Secret)
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var res ImportResult
	created, err := retryConflicts(ctx, func() ([]dbsqlc.KeyCreateWithSecretsRow, error) {
		res = ImportResult{}
		return s.importTx(ctx, pool, keys, batch, opts, withSecrets, &res)
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "keys_pool_secret_digest_idx":
		return ImportResult{}, lease.ErrDuplicateSecret
	case errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "keys_pool_name_idx":
		return ImportResult{}, lease.ErrDuplicateName
	case err != nil:
		return ImportResult{}, classify(err)
	}
	res.Keys = make([]lease.Key, len(created))
	for i, row := range created {
		res.Keys[i] = fromRow(dbsqlc.KeyGetRow(row))
	}
	if res.PolicyCreated {
		// The pool may have had keys before its policy: they stay too.
		if _, err := s.rebaseLives(ctx, pool); err != nil {
			return res, err
		}
	}
	return res, nil
}

// importSeats fills in the seats of each key of an import: its own, or the
// pool's policy's, or 1; and checks that the call creates no more than
// lease.MaxCreateSeats.
// It reads the policy in the import's transaction, after the import may
// have created it.
func importSeats(ctx context.Context, q *dbsqlc.Queries, pool string, keys []NewKey, seats []int32) error {
	byPolicy := 0
	total := 0
	for i, k := range keys {
		n := k.Seats
		if n == 0 {
			if byPolicy == 0 {
				byPolicy = 1
				row, err := q.PoolGet(ctx, pool)
				switch {
				case err == nil && row.Seats != nil:
					byPolicy = int(*row.Seats)
				case err != nil && !errors.Is(err, pgx.ErrNoRows):
					return err
				}
			}
			n = byPolicy
		}
		seats[i] = int32(n)
		total += n
	}
	if total > lease.MaxCreateSeats {
		return fmt.Errorf("%w: these keys have %d seats in all, more than the %d one call creates", lease.ErrInvalidSeats, total, lease.MaxCreateSeats)
	}
	return nil
}

// importBatch is an import's keys as the statement's parallel arrays, by
// their index in the list.
type importBatch struct {
	// seats of each key, resolved (importSeats).
	seats       []int32
	ids         []uuid.UUID
	labels      []string
	names       []string
	hints       []string
	ciphertexts [][]byte
	digests     [][]byte
	// allDigests holds each secret's digests under every configured
	// encryption key (nil for a key without a secret).
	allDigests [][][]byte
}

// importTx runs an import in one transaction, under the pool's lock for
// imports: an import on another replica that seals under another
// encryption key (during a rotation) stores another digest of the same
// secret, which the unique index cannot catch, so two duplicate checks must
// not overlap; the same lock orders the checks of names.
func (s *Store) importTx(ctx context.Context, pool string, keys []NewKey, b importBatch, opts ImportOptions,
	withSecrets bool, res *ImportResult) ([]dbsqlc.KeyCreateWithSecretsRow, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	// After a commit this does nothing.
	defer func() { _ = tx.Rollback(ctx) }()
	q := s.queries.WithTx(tx)
	if err := q.KeyLockPoolSecrets(ctx, pool); err != nil {
		return nil, err
	}
	if withSecrets {
		if res.PolicyCreated, err = q.PoolCreateIfAbsent(ctx, dbsqlc.PoolCreateIfAbsentParams{Name: pool, KeyTtl: interval(opts.KeyTTL)}); err != nil {
			return nil, err
		}
	}
	if err := importSeats(ctx, q, pool, keys, b.seats); err != nil {
		return nil, err
	}
	find := dbsqlc.KeyFindExistingParams{Pool: pool, DigestPositions: []int32{}, Digests: [][]byte{}, NamePositions: []int32{}, Names: []string{}}
	for i := range keys {
		for _, d := range b.allDigests[i] {
			find.DigestPositions = append(find.DigestPositions, int32(i))
			find.Digests = append(find.Digests, d)
		}
		if b.names[i] != "" {
			find.NamePositions = append(find.NamePositions, int32(i))
			find.Names = append(find.Names, b.names[i])
		}
	}
	existing, err := q.KeyFindExisting(ctx, find)
	if err != nil {
		return nil, err
	}
	// A key whose life has ended is gone: it is deleted now, as the
	// background job would, rather than refuse its secret or name.
	var ended []uuid.UUID
	for _, e := range existing {
		if e.Expired {
			ended = append(ended, e.KeyID)
		}
	}
	if len(ended) > 0 {
		if _, err := q.KeyDeleteExpiredByID(ctx, ended); err != nil {
			return nil, err
		}
	}
	skip := make(map[int]bool, len(existing))
	for _, e := range existing {
		if e.Expired {
			continue
		}
		if !opts.SkipExisting {
			return nil, &DuplicateError{Index: int(e.Position), Earlier: -1, Reason: e.Reason}
		}
		if !skip[int(e.Position)] {
			skip[int(e.Position)] = true
			res.Skipped = append(res.Skipped, SkippedKey{Index: int(e.Position), Reason: e.Reason})
		}
	}
	args := dbsqlc.KeyCreateWithSecretsParams{
		Pool: pool, KeyTtlSeconds: s.cfg.KeyTTL.Seconds(), SecretKeyID: s.cfg.Secrets.CurrentID(),
		Ids: []uuid.UUID{}, Labels: []string{}, Ciphertexts: [][]byte{}, Digests: [][]byte{}, Names: []string{}, Hints: []string{}, Seats: []int32{},
		AllDigests: [][]byte{}, LabelKeyIds: []uuid.UUID{}, LabelTexts: []string{},
	}
	for i, k := range keys {
		if skip[i] {
			continue
		}
		args.Ids = append(args.Ids, b.ids[i])
		args.Labels = append(args.Labels, b.labels[i])
		args.Ciphertexts = append(args.Ciphertexts, b.ciphertexts[i])
		args.Digests = append(args.Digests, b.digests[i])
		args.Names = append(args.Names, b.names[i])
		args.Hints = append(args.Hints, b.hints[i])
		args.Seats = append(args.Seats, b.seats[i])
		args.AllDigests = append(args.AllDigests, b.allDigests[i]...)
		for name, value := range k.Labels {
			args.LabelKeyIds = append(args.LabelKeyIds, b.ids[i])
			args.LabelTexts = append(args.LabelTexts, name+"="+value)
		}
	}
	var rows []dbsqlc.KeyCreateWithSecretsRow
	if len(args.Ids) > 0 {
		if rows, err = q.KeyCreateWithSecrets(ctx, args); err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			// The statement's own check found a digest that the search
			// above did not: only a concurrent rotation can do that.
			return nil, lease.ErrDuplicateSecret
		}
	}
	return rows, tx.Commit(ctx)
}

// GetSecret returns a live key with its secret, when leaseToken names the
// key's current lease and that lease is running: lease.ErrLeaseMismatch
// otherwise. A key without a secret is returned with Secret nil.
func (s *Store) GetSecret(ctx context.Context, id uuid.UUID, leaseToken int64) (lease.Key, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	row, err := s.queries.KeyGetSecret(ctx, dbsqlc.KeyGetSecretParams{ID: id, LeaseToken: leaseToken})
	if err != nil {
		return lease.Key{}, classify(err)
	}
	if !row.LeaseCurrent {
		return lease.Key{}, lease.ErrLeaseMismatch
	}
	// The lease's own seat (a key of several seats has a lease per seat).
	keyRow, err := s.queries.KeyGetLease(ctx, dbsqlc.KeyGetLeaseParams{ID: id, LeaseToken: leaseToken})
	if err != nil {
		return lease.Key{}, classify(err)
	}
	key := fromRow(dbsqlc.KeyGetRow(keyRow))
	if err := s.openSecret(&key, row.SecretKeyID, row.SecretCiphertext); err != nil {
		return lease.Key{}, err
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
		return 0, uuid.Nil, lease.ErrNoEncryptionKey
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
			return 0, uuid.Nil, fmt.Errorf("key %s: %w: %w", row.ID, lease.ErrSecretUnavailable, err)
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

// Pauses of Reseal while rows sealed under an older key are locked by other
// statements: the first is short, each next one twice as long, up to the
// last.
const (
	resealWaitFirst = 50 * time.Millisecond
	resealWaitMax   = 2 * time.Second
)

// Reseal seals again, under the current encryption key, every secret
// sealed under the older key oldKeyID, in batches of max (ResealBatch),
// and tells progress the running total after each. A batch that finds
// nothing because other statements have the remaining rows locked is not
// the end: Reseal waits and tries again until no row is sealed under the
// older key, or ctx ends. Only then may the older key be removed.
func (s *Store) Reseal(ctx context.Context, oldKeyID string, max int, progress func(done int)) (int, error) {
	done := 0
	pause := resealWaitFirst
	for {
		n, _, err := s.ResealBatch(ctx, oldKeyID, max)
		if err != nil {
			return done, err
		}
		if n > 0 {
			done += n
			pause = resealWaitFirst
			if progress != nil {
				progress(done)
			}
			continue
		}
		qctx, cancel := s.withTimeout(ctx)
		remain, err := s.queries.KeySecretsRemainUnder(qctx, oldKeyID)
		cancel()
		if err != nil {
			return done, classify(err)
		}
		if !remain {
			return done, nil
		}
		select {
		case <-ctx.Done():
			return done, fmt.Errorf("rows sealed under key %s are still locked by other statements: %w", oldKeyID, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, resealWaitMax)
	}
}
