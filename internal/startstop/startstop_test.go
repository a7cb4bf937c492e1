package startstop

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// Start runs one goroutine however often it is called; Stop ends it and
// returns only once it has returned; a stopped runner starts again.
func TestRunnerStartsOnceAndStopWaits(t *testing.T) {
	t.Parallel()
	var r Runner
	require.False(t, r.Started())
	r.Stop() // before Start: nothing to do

	var running, finished atomic.Int32
	run := func(ctx context.Context) {
		running.Add(1)
		<-ctx.Done()
		finished.Add(1)
	}
	require.NoError(t, r.StartFunc(context.Background(), run))
	require.NoError(t, r.StartFunc(context.Background(), run))
	require.True(t, r.Started())
	r.Stop()
	require.False(t, r.Started())
	require.EqualValues(t, 1, running.Load(), "a second Start while started runs nothing")
	require.EqualValues(t, 1, finished.Load(), "Stop returns after the goroutine")
	r.Stop()

	require.NoError(t, r.StartFunc(context.Background(), run))
	r.Stop()
	require.EqualValues(t, 2, finished.Load())
}

// The goroutine's context also ends with Start's.
func TestRunnerEndsWithItsContext(t *testing.T) {
	t.Parallel()
	var r Runner
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	require.NoError(t, r.StartFunc(ctx, func(ctx context.Context) { <-ctx.Done(); close(ended) }))
	cancel()
	<-ended
	r.Stop()
}

// A start that fails leaves the runner stopped, and a later one may succeed.
func TestRunnerFailedStart(t *testing.T) {
	t.Parallel()
	var r Runner
	boom := errors.New("port taken")
	err := r.StartWith(context.Background(), func() (func(context.Context), error) { return nil, boom })
	require.ErrorIs(t, err, boom)
	require.False(t, r.Started())
	ran := make(chan struct{})
	require.NoError(t, r.StartWith(context.Background(), func() (func(context.Context), error) {
		return func(context.Context) { close(ran) }, nil
	}))
	<-ran
	r.Stop()
}
