package lease

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
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

// ErrDuplicateName: a key of the pool already has one of the names (or the
// request names one twice). Nothing was stored.
var ErrDuplicateName = errors.New("a key of the pool already has this name")

// ErrInvalidName: a key's name is empty, too long, or has characters
// outside the allowed set.
var ErrInvalidName = errors.New("invalid key name")

var keyName = regexp.MustCompile(`^[A-Za-z0-9._~:@+-]{1,128}$`)

// ValidateName checks a key's name.
func ValidateName(name string) error {
	if !keyName.MatchString(name) {
		return fmt.Errorf("%w: %q must be 1 to 128 letters, digits or any of . _ ~ : @ + -", ErrInvalidName, truncate(name))
	}
	return nil
}

// SecretHint is the part of a secret that may be shown: its last four
// characters, and nothing for a secret of fewer than 12, where four would
// be a third of it or more.
func SecretHint(secret string) string {
	runes := []rune(secret)
	if len(runes) < 12 {
		return ""
	}
	return string(runes[len(runes)-4:])
}
