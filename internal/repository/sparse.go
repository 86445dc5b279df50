package repository

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// Whence values of lseek(2) on Linux, FreeBSD and Solaris-likes; elsewhere
// lseek fails and the whole file counts as data.
const (
	seekData = 3
	seekHole = 4
)

// dataExtents calls fn for the data regions of the first size bytes of f, in
// order, skipping holes without reading them (SEEK_DATA/SEEK_HOLE). Where the
// file system or device cannot tell, the whole range is one region.
func dataExtents(f *os.File, size int64, fn func(start, end int64) error) error {
	pos := int64(0)
	for pos < size {
		start, err := f.Seek(pos, seekData)
		if errors.Is(err, syscall.ENXIO) {
			return nil // only a hole up to the end
		}
		if err != nil {
			if pos == 0 {
				return fn(0, size) // not supported
			}
			return err
		}
		if start >= size {
			return nil
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return err
		}
		end = min(end, size)
		if end <= start { // should not happen; do not loop forever
			return fn(start, size)
		}
		if err := fn(start, end); err != nil {
			return err
		}
		pos = end
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}
