package goclient_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// fault is what an outageProxy does to the requests of its window.
type fault string

const (
	// answer503 answers 503 database_unavailable with Retry-After, as a
	// replica that lost its database does, forwarding nothing.
	answer503 fault = "503"
	// cutConnection closes the connection without an answer, forwarding
	// nothing.
	cutConnection fault = "cut"
	// stopListening closes the listener and every connection: new ones are
	// refused until the window ends, when it listens again on its address.
	stopListening fault = "refused"
	// noAnswer holds the request and answers nothing, as a network that
	// drops every packet does, until the client gives up on it.
	noAnswer fault = "silent"
)

// outageProxy stands in front of a replica, forwarding requests to it,
// until a request that its window matches comes: from then on, for the
// window's length, requests meet the fault instead. It can also lose the
// answers of some requests after forwarding them, as when a connection
// breaks just after the server committed.
type outageProxy struct {
	URL string

	addr     string
	forward  *httputil.ReverseProxy
	upstream *url.URL
	srv      *http.Server

	mu         sync.Mutex
	listener   net.Listener
	conns      map[net.Conn]struct{}
	fault      fault
	retryAfter string
	opens      func(*http.Request) bool
	length     time.Duration
	began      time.Time
	lose       func(*http.Request) bool
	toLose     int
	hits       []hit
}

// hit is a request the proxy saw, when it came, and what became of it: the
// status of the answer passed on, "forwarding" while the server has it,
// "503", "cut", "lost" (forwarded, answer cut) or "refused" (the request
// that stopped the listener).
type hit struct {
	at             time.Time
	method, path   string
	idempotencyKey string
	outcome        string
}

func newOutageProxy(t *testing.T, target string) *outageProxy {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &outageProxy{
		addr: l.Addr().String(), upstream: u, forward: httputil.NewSingleHostReverseProxy(u),
		listener: l, conns: map[net.Conn]struct{}{}, retryAfter: "1",
	}
	p.URL = "http://" + p.addr
	p.srv = &http.Server{Handler: p, ConnState: p.track}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(func() {
		_ = p.srv.Close()
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, h := range p.hits {
				t.Logf("proxy: %s %s %s -> %s", h.at.Format("15:04:05.000"), h.method, h.path, h.outcome)
			}
			t.Logf("proxy: window of %v from %s", p.length, p.began.Format("15:04:05.000"))
		}
	})
	return p
}

// window arms the fault: it begins with the first request that opens
// matches and lasts length.
func (p *outageProxy) window(f fault, opens func(*http.Request) bool, length time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.opens, p.length, p.began = f, opens, length, time.Time{}
}

// loseAnswers forwards the next n requests that match and cuts their
// connections instead of passing the answers on.
func (p *outageProxy) loseAnswers(match func(*http.Request) bool, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lose, p.toLose = match, n
}

// windowEnd is when the window ended or will end; zero before it began.
func (p *outageProxy) windowEnd() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.began.IsZero() {
		return time.Time{}
	}
	return p.began.Add(p.length)
}

func (p *outageProxy) seen(match func(hit) bool) []hit {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []hit
	for _, h := range p.hits {
		if match(h) {
			out = append(out, h)
		}
	}
	return out
}

func (p *outageProxy) track(c net.Conn, state http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch state {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateHijacked, http.StateClosed:
		delete(p.conns, c)
	}
}

// record notes a request as it comes, and returns the index of its hit.
func (p *outageProxy) record(r *http.Request, outcome string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hits = append(p.hits, hit{
		at: time.Now(), method: r.Method, path: r.URL.Path,
		idempotencyKey: r.Header.Get("Idempotency-Key"), outcome: outcome,
	})
	return len(p.hits) - 1
}

func (p *outageProxy) settle(i int, outcome string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hits[i].outcome = outcome
}

func (p *outageProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	now := time.Now()
	if p.began.IsZero() && p.opens != nil && p.opens(r) {
		p.began = now
		if p.fault == stopListening {
			p.stop(p.began.Add(p.length))
		}
	}
	inWindow := !p.began.IsZero() && now.Before(p.began.Add(p.length))
	f, retryAfter := p.fault, p.retryAfter
	lose := !inWindow && p.toLose > 0 && p.lose(r)
	if lose {
		p.toLose--
	}
	p.mu.Unlock()

	switch {
	case inWindow && f == answer503:
		p.record(r, "503")
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", retryAfter)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"/problems/database_unavailable","title":"Database unavailable","status":503,`+
			`"detail":"the proxy says so","code":"database_unavailable"}`)
	case inWindow && f == noAnswer:
		p.record(r, string(f))
		<-r.Context().Done()
	case inWindow:
		// Cut, or the request that stopped the listener, whose connection
		// was closed with the others.
		p.record(r, string(f))
		hangUp(w)
	case lose:
		// The server does the work; its answer never arrives.
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = p.upstream.Scheme, p.upstream.Host
		i := p.record(r, "forwarding")
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		p.settle(i, "lost")
		hangUp(w)
	default:
		i := p.record(r, "forwarding")
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		p.forward.ServeHTTP(rec, r)
		p.settle(i, http.StatusText(rec.status))
	}
}

// stop closes the listener and every connection, and listens again on the
// same address at until. p.mu is held.
func (p *outageProxy) stop(until time.Time) {
	_ = p.listener.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	time.AfterFunc(time.Until(until), func() {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return // the lease then fails its test
		}
		p.mu.Lock()
		p.listener = l
		p.mu.Unlock()
		_ = p.srv.Serve(l) // returns at once once the test has closed the server
	})
}

// hangUp closes the request's connection without an answer.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic("hijack: " + err.Error())
	}
	_ = conn.Close()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func isKeepAlive(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/keepalive")
}

func isClaim(r *http.Request) bool { return r.Method == http.MethodGet && r.URL.Path == "/keys" }

// A lease rides out an outage shorter than itself, whether the way to the
// server answers 503, cuts connections or refuses them: it is not lost,
// its end moves on once the server is back, and its release frees the key.
// The window opens with the lease's first keep-alive, the worst moment for
// it (a third of the lease has passed without one), and lasts about half
// the lease. Its 503s ask for a Retry-After longer than the lease has left,
// which the lease must not wait out.
func TestLeaseRidesOutAnOutageShorterThanTheLease(t *testing.T) {
	t.Parallel()
	for _, f := range []fault{answer503, cutConnection, stopListening, noAnswer} {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			const leaseTTL = 2 * time.Second
			replica := servertest.Start(t, servertest.Options{LeaseTTL: leaseTTL})
			direct := newClient(t, replica.URL)
			pool := "ride-" + string(f)
			_, err := direct.CreateKey(ctx, pool)
			require.NoError(t, err)

			proxy := newOutageProxy(t, replica.URL)
			proxy.mu.Lock()
			proxy.retryAfter = "2"
			proxy.mu.Unlock()
			proxy.window(f, isKeepAlive, leaseTTL*45/100)
			// The client's own retry policy, as users have it: it honours
			// the Retry-After of a 503 for up to 5 s.
			c, err := client.New(proxy.URL)
			require.NoError(t, err)
			lease, err := c.Claim(ctx, pool)
			require.NoError(t, err)
			firstEnd := lease.ExpiresAt()

			// Until a keep-alive got through after the window, and the lease
			// took in the end it gave.
			for {
				end := proxy.windowEnd()
				keptAlive := func(h hit) bool {
					return !end.IsZero() && h.at.After(end) && h.method == http.MethodPut && h.outcome == "OK"
				}
				if len(proxy.seen(keptAlive)) > 0 && lease.ExpiresAt().After(firstEnd) {
					break
				}
				select {
				case <-lease.Lost():
					t.Fatalf("lease lost in an outage shorter than it: %v", lease.Err())
				case <-ctx.Done():
					t.Fatal("no keep-alive got through after the window")
				case <-time.After(10 * time.Millisecond):
				}
			}
			failed := proxy.seen(func(h hit) bool { return h.method == http.MethodPut && h.outcome == string(f) })
			require.NotEmpty(t, failed, "keep-alives met the outage")
			end := proxy.windowEnd()
			require.Empty(t, proxy.seen(func(h hit) bool { return h.method == http.MethodPut && h.outcome == "OK" && !h.at.After(end) }),
				"no keep-alive got through before the window closed")
			require.NoError(t, lease.Err())

			require.NoError(t, lease.Release(ctx))
			info, err := direct.GetKey(ctx, lease.ID())
			require.NoError(t, err)
			require.False(t, info.IsBlocked, "the release freed the key")
			again, err := direct.ClaimKey(ctx, pool, 0)
			require.NoError(t, err)
			require.Equal(t, lease.ID(), again.ID)
		})
	}
}

// An outage longer than the lease loses it, with the reason, and not
// before the lease's time is up.
func TestLeaseIsLostWhenAnOutageOutlastsIt(t *testing.T) {
	t.Parallel()
	for _, f := range []fault{answer503, stopListening} {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			const leaseTTL = time.Second
			replica := servertest.Start(t, servertest.Options{LeaseTTL: leaseTTL})
			direct := newClient(t, replica.URL)
			pool := "outlast-" + string(f)
			_, err := direct.CreateKey(ctx, pool)
			require.NoError(t, err)

			proxy := newOutageProxy(t, replica.URL)
			proxy.window(f, isKeepAlive, 2*leaseTTL)
			c, err := client.New(proxy.URL)
			require.NoError(t, err)
			before := time.Now()
			lease, err := c.Claim(ctx, pool)
			require.NoError(t, err)
			waitForLoss(t, ctx, lease)
			lostAfter := time.Since(before)
			require.ErrorIs(t, lease.Err(), client.ErrLeaseLost)
			require.ErrorContains(t, lease.Err(), "ran out")
			require.GreaterOrEqual(t, lostAfter, leaseTTL, "not lost before its time was up")
			require.Less(t, lostAfter, leaseTTL+time.Second, "lost once its time was up")
			require.ErrorIs(t, lease.Release(ctx), client.ErrLeaseLost)

			// The server took the key back meanwhile.
			again, err := direct.ClaimKey(ctx, pool, 5*time.Second)
			require.NoError(t, err)
			require.Equal(t, lease.ID(), again.ID)
		})
	}
}

// A claim whose connection is cut after the server committed it is sent
// again with the same idempotency key and ends with one lease. Two answers
// are lost: Go's transport sends some requests again by itself once, on a
// fresh connection, when a reused one breaks.
func TestClaimRetriedThroughACutConnectionHoldsOneLease(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dbURL := testdb.New(t)
	replica := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, SweepInterval: time.Hour})
	direct := newClient(t, replica.URL)
	_, err := direct.CreateKeys(ctx, "cut", 2)
	require.NoError(t, err)

	proxy := newOutageProxy(t, replica.URL)
	proxy.loseAnswers(isClaim, 2)
	lease, err := newClient(t, proxy.URL).Claim(ctx, "cut")
	require.NoError(t, err)

	claims := proxy.seen(func(h hit) bool { return h.method == http.MethodGet && h.path == "/keys" })
	outcomes := make([]string, len(claims))
	for i, h := range claims {
		outcomes[i] = h.outcome
		require.Equal(t, claims[0].idempotencyKey, h.idempotencyKey, "the same idempotency key on every try")
	}
	require.Equal(t, []string{"lost", "lost", "OK"}, outcomes)
	require.NotEmpty(t, claims[0].idempotencyKey)

	status, err := direct.PoolStatus(ctx, "cut")
	require.NoError(t, err)
	require.EqualValues(t, 1, status.Blocked, "one lease, not one per try")
	require.Equal(t, 1, countEvents(t, dbURL, "cut", "assigned"), "one lease in the history")
	require.NoError(t, lease.Release(ctx))
	status, err = direct.PoolStatus(ctx, "cut")
	require.NoError(t, err)
	require.EqualValues(t, 0, status.Blocked, "nothing stranded")
}
