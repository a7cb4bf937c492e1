package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Operations a client sends.
const (
	opClaim     = "claim"
	opKeepAlive = "keepalive"
	opRelease   = "release"
)

// attempt is one request a client sent and what came of it: the clients'
// log, which the checker reads.
type attempt struct {
	Client int
	// Lease numbers the client's leases; the attempts of one claim, its
	// keep-alives and its release share it.
	Lease int
	Op    string
	// Idempotency is the claim's Idempotency-Key; empty for a plain claim
	// and for other operations.
	Idempotency string
	// Key and Token: the lease's, from the claim's answer, or as sent.
	Key   string
	Token int64
	Seats int
	// Sent and Answered bound the exchange by the test's clock.
	Sent, Answered time.Time
	// Server is the replica's URL.
	Server string
	// Status is 0 when no answer came (Err says why).
	Status     int
	Code       string
	RetryAfter string
	Err        string
}

// clientLog collects the attempts of every client.
type clientLog struct {
	mu       sync.Mutex
	attempts []attempt
}

func (l *clientLog) add(a attempt) {
	l.mu.Lock()
	l.attempts = append(l.attempts, a)
	l.mu.Unlock()
}

func (l *clientLog) snapshot() []attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]attempt(nil), l.attempts...)
}

// firstClaimAfter returns when the first claim answered 200 after t was
// answered, by the server if it is not "".
func (l *clientLog) firstClaimAfter(server string, t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.attempts {
		if a.Op == opClaim && a.Status == http.StatusOK && (server == "" || a.Server == server) &&
			a.Answered.After(t) && (first.IsZero() || a.Answered.Before(first)) {
			first = a.Answered
		}
	}
	return first, !first.IsZero()
}

// firstServedAfter returns when the first request answered after t got
// an answer other than 503 (a claim's 404 no_free_key included), by the
// server if it is not "": the service serves again, whether or not a key
// is free.
func (l *clientLog) firstServedAfter(server string, t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.attempts {
		if !retryable(a) && (server == "" || a.Server == server) && a.Answered.After(t) && (first.IsZero() || a.Answered.Before(first)) {
			first = a.Answered
		}
	}
	return first, !first.IsZero()
}

// claimsBetween counts the claims the server (any, if "") answered 200
// between from and to.
func (l *clientLog) claimsBetween(server string, from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.attempts {
		if a.Op == opClaim && a.Status == http.StatusOK && (server == "" || a.Server == server) && a.Answered.After(from) && a.Answered.Before(to) {
			n++
		}
	}
	return n
}

// clientConfig sets the clients' behaviour.
type clientConfig struct {
	Servers []string
	Pool    string
	Clients int
	// PlainEvery: every PlainEvery-th client claims without an
	// Idempotency-Key, with ?wait=, so that the replicas' waiting (and its
	// LISTEN connection) goes through the failover too; the others claim
	// with one, reused on every retry until a claim is answered.
	PlainEvery int
	// Hold is how long a client holds a key between its keep-alive and its
	// release; Pause is its rest between leases. Both keep two cores from
	// being saturated by the clients themselves.
	Hold, Pause time.Duration
	// RetryPause is the pause before a retry after a 503 or a failed
	// exchange: short, so that the end of an outage is seen within it.
	RetryPause time.Duration
	// Patience bounds the retries of a keep-alive or release after the
	// clients were told to stop, so that a run always ends.
	Patience time.Duration
}

// runClients starts the clients; they claim, keep alive once, hold, and
// release until stop is closed, then finish the lease they hold and
// return. The returned channel is closed when every client has returned.
func runClients(cfg clientConfig, log *clientLog, stop <-chan struct{}) <-chan struct{} {
	transport := &http.Transport{MaxIdleConnsPerHost: cfg.Clients, DisableCompression: true}
	httpClient := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for c := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &client{id: c, cfg: cfg, http: httpClient, log: log, stop: stop, run: run,
				plain: cfg.PlainEvery > 0 && c%cfg.PlainEvery == cfg.PlainEvery-1}
			cl.loop()
		}()
	}
	go func() {
		wg.Wait()
		transport.CloseIdleConnections()
		close(done)
	}()
	return done
}

type client struct {
	id    int
	cfg   clientConfig
	http  *http.Client
	log   *clientLog
	stop  <-chan struct{}
	run   string
	plain bool
	// n counts requests, to spread them over the replicas.
	n int
}

func (c *client) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

func (c *client) loop() {
	for lease := 0; !c.stopped(); lease++ {
		key, token, seats, ok := c.claim(lease)
		if !ok {
			continue
		}
		if c.send(lease, opKeepAlive, key, token, seats) {
			time.Sleep(c.cfg.Hold)
		}
		c.send(lease, opRelease, key, token, seats)
		time.Sleep(c.cfg.Pause)
	}
}

// server returns the replica for the next request: the client's requests
// alternate between them, retries included, as behind a load balancer.
func (c *client) server() string {
	c.n++
	return c.cfg.Servers[(c.id+c.n)%len(c.cfg.Servers)]
}

// claim claims a key, retrying after a 503 or a failed exchange (with the
// same Idempotency-Key) until one is answered or the clients are told to
// stop. A 404 (no free key) ends the try; ok is false then.
func (c *client) claim(lease int) (key string, token int64, seats int, ok bool) {
	idem := ""
	if !c.plain {
		idem = fmt.Sprintf("%s-c%d-l%d", c.run, c.id, lease)
	}
	query := "?pool=" + url.QueryEscape(c.cfg.Pool)
	if c.plain {
		query += "&wait=2s"
	}
	for {
		a := attempt{Client: c.id, Lease: lease, Op: opClaim, Idempotency: idem}
		var body struct {
			KeyID      string `json:"keyId"`
			LeaseToken string `json:"leaseToken"`
			Seats      int    `json:"seats"`
		}
		headers := map[string]string{}
		if idem != "" {
			headers["Idempotency-Key"] = idem
		}
		c.do(&a, http.MethodGet, c.server()+"/keys"+query, headers, &body)
		if a.Status == http.StatusOK {
			a.Key, a.Seats = body.KeyID, body.Seats
			a.Token, _ = strconv.ParseInt(body.LeaseToken, 10, 64)
		}
		c.log.add(a)
		switch {
		case a.Status == http.StatusOK:
			return a.Key, a.Token, a.Seats, true
		case a.Status == http.StatusNotFound:
			time.Sleep(c.cfg.Pause)
			return "", 0, 0, false
		case retryable(a) && !c.stopped():
			c.pause()
		default:
			// Anything else is in the log for the checker; the client
			// moves on.
			return "", 0, 0, false
		}
	}
}

// send sends a keep-alive or release of the lease, with its token,
// retrying after a 503 or a failed exchange. It reports whether the last
// answer was 200.
func (c *client) send(lease int, op, key string, token int64, seats int) bool {
	path := "/keys/" + key
	if op == opKeepAlive {
		path += "/keepalive"
	}
	path += "?lease=" + strconv.FormatInt(token, 10)
	var giveUp time.Time
	for {
		a := attempt{Client: c.id, Lease: lease, Op: op, Key: key, Token: token, Seats: seats}
		c.do(&a, http.MethodPut, c.server()+path, nil, nil)
		c.log.add(a)
		if !retryable(a) {
			return a.Status == http.StatusOK
		}
		if c.stopped() {
			if giveUp.IsZero() {
				giveUp = time.Now().Add(c.cfg.Patience)
			}
			if time.Now().After(giveUp) {
				return false
			}
		}
		c.pause()
	}
}

// retryable: a 503, or no answer at all.
func retryable(a attempt) bool {
	return a.Status == 0 || a.Status == http.StatusServiceUnavailable
}

func (c *client) pause() {
	time.Sleep(c.cfg.RetryPause/2 + rand.N(c.cfg.RetryPause))
}

// do sends one request and fills in the attempt; body, when not nil, is
// decoded from a 200.
func (c *client) do(a *attempt, method, u string, headers map[string]string, body any) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.Sent = time.Now()
	a.Server = strings.SplitN(u, "/keys", 2)[0]
	defer func() { a.Answered = time.Now() }()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		a.Err = err.Error()
		return
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		a.Err = err.Error()
		return
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.Err = err.Error()
		return
	}
	a.Status = resp.StatusCode
	a.RetryAfter = resp.Header.Get("Retry-After")
	if resp.StatusCode == http.StatusOK {
		if body != nil {
			if err := json.Unmarshal(raw, body); err != nil {
				a.Err = "undecodable answer: " + err.Error()
			}
		}
		return
	}
	var problem struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(raw, &problem)
	a.Code = problem.Code
	if a.Code == "" {
		a.Err = "answer without a problem code: " + string(raw)
	}
}
