package batch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Requests that arrive while a call is in flight are served together by the
// next call, and each gets its own result.
func TestRequestsArrivingTogetherShareACall(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var calls, maxSize atomic.Int64
	c := New(Config[string, int, int]{
		Run: func(_ context.Context, key string, reqs []int) []Result[int] {
			if calls.Add(1) == 1 {
				<-release // hold the first call so that the others queue up
			}
			if int64(len(reqs)) > maxSize.Load() {
				maxSize.Store(int64(len(reqs)))
			}
			out := make([]Result[int], len(reqs))
			for i, r := range reqs {
				out[i].Value = r * 10
			}
			return out
		},
		MaxBatch: 100,
	})
	var wg sync.WaitGroup
	results := make([]int, 51)
	do := func(i int) {
		defer wg.Done()
		v, err := c.Do(context.Background(), "k", i)
		require.NoError(t, err)
		results[i] = v
	}
	wg.Add(1)
	go do(0)
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	for i := 1; i <= 50; i++ {
		wg.Add(1)
		go do(i)
	}
	// Give the 50 time to queue behind the held call, then let it go.
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.queues["k"] != nil && len(c.queues["k"].pending) == 50
	}, 5*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	for i, v := range results {
		require.Equal(t, i*10, v)
	}
	require.EqualValues(t, 2, calls.Load(), "one call for the first request, one for the 50 queued")
	require.EqualValues(t, 50, maxSize.Load())
	c.mu.Lock()
	require.Empty(t, c.queues, "idle keys are forgotten")
	c.mu.Unlock()
}

func TestBatchesAreCappedAndKeysAreSeparate(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	sizes := map[string][]int{}
	c := New(Config[string, int, int]{
		Run: func(_ context.Context, key string, reqs []int) []Result[int] {
			time.Sleep(time.Millisecond) // let requests queue up
			mu.Lock()
			sizes[key] = append(sizes[key], len(reqs))
			mu.Unlock()
			return make([]Result[int], len(reqs))
		},
		MaxBatch: 4,
	})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Do(context.Background(), []string{"a", "b"}[i%2], i)
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Len(t, sizes, 2)
	for key, s := range sizes {
		total := 0
		for _, n := range s {
			require.LessOrEqual(t, n, 4, key)
			total += n
		}
		require.Equal(t, 10, total, key)
	}
}

// A request whose caller leaves while its batch runs still completes; its
// result is handed to Abandoned so that it can be undone.
func TestAbandonedResultsAreHandedBack(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	running := make(chan struct{})
	abandoned := make(chan int, 1)
	c := New(Config[string, int, int]{
		Run: func(_ context.Context, _ string, reqs []int) []Result[int] {
			close(running)
			<-gate
			return []Result[int]{{Value: reqs[0] + 1}}
		},
		Abandoned: func(_ string, v int) { abandoned <- v },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.Do(ctx, "k", 41)
		done <- err
	}()
	<-running
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	close(gate)
	require.Equal(t, 42, <-abandoned)
}

func TestErrorsReachEveryRequest(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	c := New(Config[string, int, int]{
		Run: func(_ context.Context, _ string, reqs []int) []Result[int] {
			out := make([]Result[int], len(reqs))
			for i := range out {
				out[i].Err = boom
			}
			return out
		},
	})
	_, err := c.Do(context.Background(), "k", 1)
	require.ErrorIs(t, err, boom)
}

// A request whose caller gave up while it waited behind a call in flight
// is left out of the next call: nothing is done in its name.
func TestRequestsGivenUpBeforeTheirCallAreNotRun(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	var ran []int
	c := New(Config[string, int, int]{
		Run: func(_ context.Context, _ string, reqs []int) []Result[int] {
			mu.Lock()
			ran = append(ran, reqs...)
			first := len(ran) == 1
			mu.Unlock()
			if first {
				<-release
			}
			return make([]Result[int], len(reqs))
		},
	})
	firstDone := make(chan error, 1)
	go func() { _, err := c.Do(context.Background(), "k", 1); firstDone <- err }()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(ran) == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.Do(ctx, "k", 2)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// A third request queues behind too, and is still waited for.
	thirdDone := make(chan error, 1)
	go func() { _, err := c.Do(context.Background(), "k", 3); thirdDone <- err }()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queues["k"].pending) == 2
	}, 5*time.Second, time.Millisecond)
	close(release)
	require.NoError(t, <-firstDone)
	require.NoError(t, <-thirdDone)
	c.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []int{1, 3}, ran, "the request given up was not run")
}
