package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tokenorchestrator/tokenorchestrator/internal/secrets"
)

// LoadSecrets reads the encryption keys of the credentials that keys carry, from the
// environment only (a flag would show a key in the process list):
//
//   - SECRET_KEY: the current key, 32 random bytes in standard base64
//     (openssl rand -base64 32); or SECRET_KEY_FILE, a file holding it.
//   - SECRET_KEYS_OLD: older keys that must still decrypt rows sealed
//     before a rotation, comma-separated, each in standard base64; or
//     SECRET_KEYS_OLD_FILE, a file with one per line (blank lines and lines
//     starting with # ignored).
//
// Key ids are derived from the keys themselves (see internal/secrets), so
// a key never needs a name. After `token-orchestrator secrets rotate` has
// resealed every row under the current key, older keys may be removed.
//
// Errors name the setting and the line, never the value.
func LoadSecrets(getenv func(string) string) (*secrets.Keyring, error) {
	var errs []error
	current, err := oneOf(getenv, "SECRET_KEY", "SECRET_KEY_FILE")
	if err != nil {
		return nil, err
	}
	older, err := oneOf(getenv, "SECRET_KEYS_OLD", "SECRET_KEYS_OLD_FILE")
	if err != nil {
		return nil, err
	}
	var currentKey []byte
	if current.value != "" {
		if currentKey, err = secrets.ParseKey(current.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: the key %w", current.name, err))
		}
	}
	var olderKeys [][]byte
	if older.value != "" {
		sep := ","
		if older.fromFile {
			sep = "\n"
		}
		for i, entry := range strings.Split(older.value, sep) {
			entry = strings.TrimSpace(entry)
			if entry == "" || strings.HasPrefix(entry, "#") {
				continue
			}
			key, err := secrets.ParseKey(entry)
			if err != nil {
				what := "entry"
				if older.fromFile {
					what = "line"
				}
				errs = append(errs, fmt.Errorf("%s: %s %d %w", older.name, what, i+1, err))
				continue
			}
			olderKeys = append(olderKeys, key)
		}
		if currentKey == nil && len(errs) == 0 {
			errs = append(errs, fmt.Errorf("%s is set but SECRET_KEY (or SECRET_KEY_FILE) is not: older keys only decrypt beside a current one", older.name))
		}
	}
	if len(errs) > 0 || currentKey == nil {
		return nil, errors.Join(errs...)
	}
	kr, err := secrets.New(currentKey, olderKeys...)
	if err != nil {
		return nil, fmt.Errorf("SECRET_KEY: %w", err)
	}
	return kr, nil
}

type setting struct {
	name     string
	value    string
	fromFile bool
}

// oneOf reads a setting given either directly or as a file.
func oneOf(getenv func(string) string, name, fileName string) (setting, error) {
	value, file := getenv(name), strings.TrimSpace(getenv(fileName))
	switch {
	case value != "" && file != "":
		return setting{}, fmt.Errorf("%s and %s are both set; set one", name, fileName)
	case file != "":
		raw, err := os.ReadFile(file)
		if err != nil {
			return setting{}, fmt.Errorf("%s: cannot read the file: %w", fileName, errors.Unwrap(err))
		}
		return setting{name: fileName, value: string(raw), fromFile: true}, nil
	}
	return setting{name: name, value: value}, nil
}
