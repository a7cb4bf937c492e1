package faults

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
)

// answer is one HTTP exchange.
type answer struct {
	status  int
	header  http.Header
	body    map[string]any
	elapsed time.Duration
	err     error
}

func (a answer) str(field string) string {
	s, _ := a.body[field].(string)
	return s
}

var httpClient = &http.Client{Timeout: 20 * time.Second}

func call(method, url, body string, headers ...string) answer {
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, reader)
	if err != nil {
		return answer{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	raw, err := io.ReadAll(resp.Body)
	a.elapsed = time.Since(start)
	if err != nil {
		a.err = err
		return a
	}
	if method != http.MethodHead {
		a.err = json.Unmarshal(raw, &a.body)
	}
	return a
}

func freePort(t interface{ Fatalf(string, ...any) }) int {
	port, err := pgembed.FreePort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return port
}
