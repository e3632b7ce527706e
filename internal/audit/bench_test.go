package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/keyring/boltstore"
)

// countingStore counts the anchor writes reaching the bbolt store.
type countingStore struct {
	*boltstore.Store
	puts atomic.Int64
}

func (s *countingStore) PutAnchor(ctx context.Context, name string, v []byte) error {
	s.puts.Add(1)
	return s.Store.PutAnchor(ctx, name, v)
}

// BenchmarkAppend appends records from 16 goroutines per CPU to a log
// whose checkpoints and head are anchored in a real bbolt keyring store
// (fsync'd like the log), with head anchoring off (checkpoints only),
// at the default interval, and after every fsync; store-writes/s is how
// often the store was written meanwhile.
func BenchmarkAppend(b *testing.B) {
	signer := newTestSigner(b)
	for _, c := range []struct {
		name string
		head time.Duration
	}{{"head=off", -1}, {"head=default", 0}, {"head=every-fsync", time.Nanosecond}} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			bolt, err := boltstore.Open(filepath.Join(dir, "keyring.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer bolt.Close()
			store := &countingStore{Store: bolt}
			l, err := Open(context.Background(), Options{Path: filepath.Join(dir, "jsonl"), Replica: "r1",
				Signer: signer, Anchors: store, HeadInterval: c.head})
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(16)
			start, puts := time.Now(), store.puts.Load()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if err := l.Write(&Record{Time: time.Now(), RequestID: fmt.Sprint(i), Identity: "spiffe://t/c", Operation: "sign.raw",
						KeyID: "k", Outcome: "allowed", Code: "OK", PayloadSHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(store.puts.Load()-puts)/time.Since(start).Seconds(), "store-writes/s")
			l.Close()
		})
	}
}
