package groupcommit

import (
	"sync"
	"testing"
	"time"
)

type write struct {
	n         int
	committed int // times a commit held it
}

// Concurrent writes are each committed exactly once, in batches no larger
// than Max, each caller returning only after the commit that held its
// write; with a slow commit, writes that arrive meanwhile share the next.
func TestEveryWriteCommittedOnceWithinMax(t *testing.T) {
	g := Group[*write]{Max: 5}
	var mu sync.Mutex
	var sizes []int
	commit := func(batch []*write) {
		time.Sleep(time.Millisecond) // a transaction being written
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(batch))
		for _, w := range batch {
			w.committed++
		}
	}
	ws := make([]*write, 200)
	var wg sync.WaitGroup
	for i := range ws {
		ws[i] = &write{n: i}
		wg.Go(func() {
			g.Do(ws[i], commit)
			mu.Lock()
			defer mu.Unlock()
			if ws[i].committed != 1 {
				t.Errorf("write %d returned having been committed %d times", i, ws[i].committed)
			}
		})
	}
	wg.Wait()
	total, shared := 0, 0
	for _, n := range sizes {
		if n > 5 || n < 1 {
			t.Errorf("a batch of %d", n)
		}
		total += n
		if n > 1 {
			shared++
		}
	}
	if total != 200 || shared == 0 {
		t.Errorf("%d writes committed in %d batches, %d shared: want 200, some shared", total, len(sizes), shared)
	}
}
