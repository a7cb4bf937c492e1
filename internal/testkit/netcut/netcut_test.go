package netcut

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// The proxy holds bytes and new connections during a cut, and delivers
// them once it ends.
func TestProxyHoldsTrafficUntilRestored(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	p := Start(t, echo.Addr().String())
	dial := func() net.Conn {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// roundTrip writes a byte and reads its echo within d.
	roundTrip := func(c net.Conn, b byte, d time.Duration) error {
		if _, err := c.Write([]byte{b}); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(d))
		got := make([]byte, 1)
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if got[0] != b {
			return fmt.Errorf("echo %q, want %q", got[0], b)
		}
		return nil
	}
	before := dial()
	if err := roundTrip(before, 'a', 5*time.Second); err != nil {
		t.Fatalf("before the cut: %v", err)
	}
	p.Cut()
	if err := roundTrip(before, 'b', 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("during the cut, an open connection's echo: %v, want none", err)
	}
	during := dial()
	if err := roundTrip(during, 'c', 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("during the cut, a new connection's echo: %v, want none", err)
	}
	p.Restore()
	// What was held arrives: 'b' on the old connection, 'c' on the new.
	for _, c := range []struct {
		conn net.Conn
		held byte
	}{{before, 'b'}, {during, 'c'}} {
		_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 1)
		if _, err := io.ReadFull(c.conn, got); err != nil || got[0] != c.held {
			t.Fatalf("after the cut, the held byte: %q, %v; want %q", got, err, c.held)
		}
		if err := roundTrip(c.conn, 'd', 5*time.Second); err != nil {
			t.Fatalf("after the cut: %v", err)
		}
	}
}
