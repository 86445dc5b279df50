package service

// Meter counts the data that jobs move, for metrics. Its methods are
// called from job goroutines and must return quickly.
type Meter interface {
	// BackedUp is called once per backup that ended available, with the
	// bytes it read from the disks and the bytes it wrote to the
	// repository after deduplication and compression.
	BackedUp(read, stored int64)
	// Restored is called with the bytes of each disk a restore wrote.
	Restored(n int64)
}

type noMeter struct{}

func (noMeter) BackedUp(read, stored int64) {}
func (noMeter) Restored(n int64)            {}
