package proxy_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
	"github.com/tokenorchestrator/tokenorchestrator/internal/proxy"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// BenchmarkProxy measures what the proxy adds to a request: the same
// request to a trivial upstream, directly and through the proxy, which
// claims a key from a server on PostgreSQL, sets its header, forwards,
// and releases the key. The difference of the two per request is the
// proxy's cost; claim-release is the part of it that is the server's (a
// claim and a release through the client, nothing forwarded). The
// parallel variants run GOMAXPROCS requests at once, each with a key of
// its own. proxied-memory is the proxy with a stand-in for the server that
// keeps its one key in memory: the proxy's own cost, without PostgreSQL's.
// Run it with make bench-proxy.
func BenchmarkProxy(b *testing.B) {
	ctx := context.Background()
	c, err := client.New(servertest.Start(b, servertest.Options{Configure: withEncryptionKey(b)}).URL)
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]client.NewKey, 256)
	for i := range keys {
		keys[i].Secret = "sk-" + rand.Text()
	}
	if _, err := c.ImportKeys(ctx, "bench", keys); err != nil {
		b.Fatal(err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" && r.URL.Path == "/proxied" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	b.Cleanup(upstream.Close)
	target, _ := url.Parse(upstream.URL)
	p, err := proxy.New(proxy.Config{
		Client: c, Pool: "bench", Upstream: target,
		Headers: []proxy.Header{{Name: "Authorization", Value: "Bearer {secret}"}},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(p)
	b.Cleanup(front.Close)

	memory := memoryServer(b)
	mp, err := proxy.New(proxy.Config{
		Client: memory, Upstream: target,
		Headers: []proxy.Header{{Name: "Authorization", Value: "Bearer {secret}"}},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	memoryFront := httptest.NewServer(mp)
	b.Cleanup(memoryFront.Close)

	transport := &http.Transport{MaxIdleConnsPerHost: 256}
	b.Cleanup(transport.CloseIdleConnections)
	hc := &http.Client{Transport: transport}
	get := func(b *testing.B, u string) {
		resp, err := hc.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %s", u, resp.Status)
		}
	}
	b.Run("claim-release", func(b *testing.B) {
		for b.Loop() {
			lease, err := c.Claim(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			if err := lease.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct{ name, url string }{
		{"direct", upstream.URL + "/direct"},
		{"proxied", front.URL + "/proxied"},
		{"proxied-memory", memoryFront.URL + "/proxied"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				get(b, bc.url)
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get(b, bc.url)
				}
			})
		})
	}
}

// memoryServer is a client of a stand-in for the server that answers every
// claim with the same key, at once, and every release and keep-alive with
// success: it takes PostgreSQL out of the proxy's cost.
func memoryServer(b *testing.B) *client.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UTC()
		key := client.Key{ID: "00000000-0000-4000-8000-000000000001", Pool: "default", IsBlocked: true,
			CreatedAt: now, BlockedAt: &now, LeaseToken: "1", Secret: "sk-memory"}
		end := now.Add(time.Minute)
		key.LeaseExpiresAt = &end
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(key)
	}))
	b.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}))
	if err != nil {
		b.Fatal(err)
	}
	return c
}
