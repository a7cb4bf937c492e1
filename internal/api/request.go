package api

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// What handlers read from a request: query parameters and JSON bodies,
// refused with a problem that says what was wrong.

// intParam reads an optional whole number in [min, max].
func intParam(query url.Values, name string, fallback, min, max int) (int, error) {
	values, ok := query[name]
	if !ok {
		return fallback, nil
	}
	n, err := strconv.Atoi(values[0])
	if err != nil || n < min || n > max {
		return 0, invalid(errInvalidParameter, "%s must be a whole number from %d to %d, got %q", name, min, max, values[0])
	}
	return n, nil
}

// timeParam reads an RFC 3339 time.
func timeParam(raw, name string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		return time.Time{}, invalid(errInvalidParameter, "%s must be an RFC 3339 time such as 2026-11-21T18:00:00Z, got %q", name, raw)
	}
	return t, nil
}

// decodeBody decodes an optional JSON body into dst. An empty body leaves
// dst as it is.
func decodeBody(r *http.Request, dst any) error {
	_, err := decodeBodySize(r, dst)
	return err
}

// decodeBodySize is decodeBody that also returns the body's size.
func decodeBodySize(r *http.Request, dst any) (int, error) {
	raw, err := readBody(r)
	if err != nil {
		return 0, err
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return len(raw), nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return 0, invalid(errInvalidBody, "the body is not valid JSON for this request: %s", describeJSONError(err))
	}
	if dec.More() {
		return 0, invalid(errInvalidBody, "the body must hold a single JSON object")
	}
	return len(raw), nil
}

// readBody reads the whole body after checking that it is JSON.
func readBody(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mediaType, _, err := mime.ParseMediaType(ct)
		if err != nil || (mediaType != "application/json" && !strings.HasSuffix(mediaType, "+json")) {
			return nil, invalid(errUnsupportedMedia, "the body must be JSON (Content-Type: application/json), got %q", ct)
		}
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, invalid(errBodyTooLarge, "the body must be at most %d bytes", tooLarge.Limit)
		}
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return nil, invalid(errInvalidBody, "the body did not arrive within the server's read timeout")
		}
		return nil, invalid(errInvalidBody, "the body could not be read")
	}
	return raw, nil
}

func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field != "" {
			return typeErr.Field + " must be " + jsonKind(typeErr.Type.Kind().String())
		}
		return "expected a JSON object"
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return "malformed JSON at byte " + strconv.FormatInt(syntaxErr.Offset, 10)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "the JSON ends too early"
	}
	return err.Error()
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "int32":
		return "an integer"
	case "string":
		return "a string"
	default:
		return "a " + goKind
	}
}
