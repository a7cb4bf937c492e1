package server_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/server"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// safety bounds how long a test waits for the server to act before it
// gives up; the server is expected to act far sooner, and no assertion
// depends on how much sooner.
const safety = 30 * time.Second

// replica starts the service as the binary assembles it, with configure
// applied, and returns its host:port.
func replica(t *testing.T, configure func(*config.Config)) string {
	t.Helper()
	r := servertest.Start(t, servertest.Options{Configure: configure})
	u, err := url.Parse(r.URL)
	require.NoError(t, err)
	return u.Host
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(safety)))
	return conn
}

// requireClosedByServer reads until the server closes the connection, and
// fails if the test's own safety deadline ends the read instead. It
// returns what was read.
func requireClosedByServer(t *testing.T, conn net.Conn) string {
	t.Helper()
	got, err := io.ReadAll(conn)
	var netErr net.Error
	require.False(t, errors.As(err, &netErr) && netErr.Timeout(), "the server left the connection open; read so far: %q", got)
	return string(got)
}

// Request headers beyond MaxHeaderBytes are refused with 431 before any
// handler runs; headers below it are served.
func TestOversizedHeadersAreRefused(t *testing.T) {
	t.Parallel()
	addr := replica(t, nil)
	status := func(headerBytes int) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
		require.NoError(t, err)
		req.Header.Set("X-Padding", strings.Repeat("a", headerBytes))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, status(server.MaxHeaderBytes/2))
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, status(2*server.MaxHeaderBytes))
}

// A client that trickles its headers a byte at a time is cut off once
// ReadHeaderTimeout has passed since it began, however busy it looks.
func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	addr := replica(t, func(c *config.Config) { c.ReadHeaderTimeout = 300 * time.Millisecond })
	conn := dial(t, addr)
	_, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)

	stopped := make(chan int)
	go func() {
		// One byte of an endless header every 10ms, until the server hangs
		// up on us.
		sent := 0
		for _, err := io.WriteString(conn, "X-Slow: "); err == nil; _, err = conn.Write([]byte{'a'}) {
			sent++
			time.Sleep(10 * time.Millisecond)
		}
		stopped <- sent
	}()
	got := requireClosedByServer(t, conn)
	require.NotContains(t, got, "200 OK", "no answer to a request whose headers never ended")
	require.Greater(t, <-stopped, 0)
}

// A client that sends headers but not the body it announced is cut off
// after ReadTimeout: its request fails with a JSON answer and the
// connection is closed.
func TestSlowBodyIsCutOff(t *testing.T) {
	t.Parallel()
	addr := replica(t, func(c *config.Config) { c.ReadTimeout = 300 * time.Millisecond })
	conn := dial(t, addr)
	_, err := io.WriteString(conn, "POST /keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"count\":")
	require.NoError(t, err)
	got := requireClosedByServer(t, conn)
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
	require.NoError(t, err, got)
	defer resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, got)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"), got)
	require.Contains(t, got, `"code":"invalid_body"`)
	require.Contains(t, got, "read timeout")
	// Nothing was created from the half-sent request.
	none := do(t, "GET", "http://"+addr+"/keys", "")
	require.Equal(t, http.StatusNotFound, none.StatusCode)
}

// A kept-alive connection that sends nothing more is closed after
// IdleTimeout.
func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	addr := replica(t, func(c *config.Config) { c.IdleTimeout = 300 * time.Millisecond })
	conn := dial(t, addr)
	_, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	reader := bufio.NewReader(conn)
	resp, err := http.ReadResponse(reader, nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.False(t, resp.Close, "the connection is kept alive")

	rest, err := io.ReadAll(reader)
	var netErr net.Error
	require.False(t, errors.As(err, &netErr) && netErr.Timeout(), "the idle connection was left open")
	require.Empty(t, rest)
}

// A wait for a key may last longer than the time a client has to send its
// request: ReadTimeout bounds the request, not the wait.
func TestLongPollOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	addr := replica(t, func(c *config.Config) { c.ReadTimeout = 200 * time.Millisecond })
	holdEveryKey(t, "http://"+addr, "none")
	resp := do(t, "GET", fmt.Sprintf("http://%s/keys?pool=none&wait=1s", addr), "")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, "no_free_key", resp.problem["code"])
}

// The answers of the server itself, without the API's own checks, are
// what the tests above look at.
type answer struct {
	StatusCode int
	problem    map[string]any
}

// holdEveryKey creates a key in the pool and claims it: the pool has keys,
// and none is free, so a claim on it waits.
func holdEveryKey(t *testing.T, url, pool string) {
	t.Helper()
	require.Equal(t, http.StatusCreated, do(t, "POST", url+"/keys?pool="+pool, "").StatusCode)
	require.Equal(t, http.StatusOK, do(t, "GET", url+"/keys?pool="+pool, "").StatusCode)
}

func do(t *testing.T, method, url, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{StatusCode: resp.StatusCode}
	require.NoError(t, json.Unmarshal(raw, &a.problem), "the answer is JSON: %q", raw)
	return a
}
