// Command mutate changes a disk image in place the way a running machine
// would, for the incremental scenarios of bench/backup.sh. Writes go to the
// file itself (never a new file renamed into place), so that changed-block
// tracking by extent comparison sees them as a guest's writes; the image is
// fsynced at the end.
//
// Scenarios:
//
//	blocks     copy every 4 MiB block of -from that differs into the image
//	           (genimage's changed.img: 1% of the blocks rewritten)
//	clustered  -writes 4 KiB writes of random data in -regions regions of
//	           1 MiB at random 4 KiB-aligned places (a file system's pattern:
//	           data, its metadata and journal blocks near each other)
//	append     -mb MiB of log lines written from 3000 bytes before the end
//	           of the data run followed by the longest hole (a log growing
//	           into free space after the used data)
//
// The result is a pure function of the image, the flags and -seed. It prints
// the bytes written and the distinct 4 MiB blocks touched.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"golang.org/x/sys/unix"
)

const (
	page  = 4096
	block = 4 << 20
)

func main() {
	image := flag.String("image", "", "the image to change in place")
	scenario := flag.String("scenario", "", "blocks, clustered or append")
	from := flag.String("from", "", "blocks: the image whose differing blocks are copied")
	writes := flag.Int("writes", 2000, "clustered: number of 4 KiB writes")
	regions := flag.Int("regions", 50, "clustered: number of regions")
	mb := flag.Int("mb", 64, "append: MiB appended")
	seed := flag.Uint64("seed", 1, "seed of places and contents")
	flag.Parse()
	f, err := os.OpenFile(*image, os.O_RDWR, 0)
	if err != nil {
		fail(err)
	}
	fi, err := f.Stat()
	if err != nil {
		fail(err)
	}
	rnd := rand.New(rand.NewPCG(*seed, 0x6d7574617465))
	touched := map[int64]bool{}
	var written int64
	write := func(p []byte, off int64) {
		if _, err := f.WriteAt(p, off); err != nil {
			fail(err)
		}
		written += int64(len(p))
		for b := off / block; b <= (off+int64(len(p))-1)/block; b++ {
			touched[b] = true
		}
	}
	switch *scenario {
	case "blocks":
		src, err := os.Open(*from)
		if err != nil {
			fail(err)
		}
		a, b := make([]byte, block), make([]byte, block)
		for off := int64(0); off < fi.Size(); off += block {
			n, err := io.ReadFull(io.NewSectionReader(f, off, block), a)
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				fail(err)
			}
			if _, err := io.ReadFull(io.NewSectionReader(src, off, int64(n)), b[:n]); err != nil {
				fail(err)
			}
			if !bytes.Equal(a[:n], b[:n]) {
				write(b[:n], off)
			}
		}
	case "clustered":
		p := make([]byte, page)
		pages := fi.Size() / page
		const span = (1 << 20) / page // a region is 1 MiB
		for r := range *regions {
			base := rnd.Int64N(pages - span)
			n := *writes / *regions
			if r < *writes%*regions {
				n++
			}
			for range n {
				fillRandom(rnd, p)
				write(p, (base+rnd.Int64N(span))*page)
			}
		}
	case "append":
		n := int64(*mb) << 20
		off, err := afterData(f, fi.Size(), n)
		if err != nil {
			fail(err)
		}
		var text bytes.Buffer
		for i := 0; int64(text.Len()) < n; i++ {
			fmt.Fprintf(&text, "2026-11-29T12:%02d:%02d.%06dZ app[%d]: request %d from 10.%d.%d.%d took %d ms status %d\n",
				i/60000%60, i/1000%60, rnd.IntN(1000000), 1000+rnd.IntN(64), i, rnd.IntN(256), rnd.IntN(256), rnd.IntN(256),
				rnd.IntN(2000), []int{200, 200, 200, 304, 404, 500}[rnd.IntN(6)])
		}
		write(text.Bytes()[:n], off)
	default:
		fail(fmt.Errorf("-scenario %q: want blocks, clustered or append", *scenario))
	}
	if err := f.Sync(); err != nil {
		fail(err)
	}
	fmt.Printf("%s: wrote %d bytes, touched %d of %d 4 MiB blocks\n", *scenario, written, len(touched), (fi.Size()+block-1)/block)
}

// afterData is where the append starts: 3000 bytes before the end of the
// data run followed by the longest hole (the free space a file system
// would fill), so the log continues a partly filled block; what lies past
// the hole, if it is shorter than n, is overwritten.
func afterData(f *os.File, size, n int64) (int64, error) {
	const seekData, seekHole = 3, 4
	fd := int(f.Fd())
	best, bestLen := int64(-1), int64(-1)
	for pos := int64(0); pos < size; {
		start, err := unix.Seek(fd, pos, seekData)
		if err != nil {
			break
		}
		end, err := unix.Seek(fd, start, seekHole)
		if err != nil {
			return 0, err
		}
		next, err := unix.Seek(fd, end, seekData)
		if err != nil {
			next = size // only a hole after end
		}
		if next-end > bestLen && end >= 3000 && end-3000+n <= size {
			best, bestLen = end-3000, next-end
		}
		pos = max(next, end+1)
	}
	if best < 0 {
		return 0, fmt.Errorf("no room for %d bytes after data in the image", n)
	}
	return best, nil
}

func fillRandom(rnd *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := rnd.Uint64()
		for j := range 8 {
			p[i+j] = byte(v >> (8 * j))
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mutate:", err)
	os.Exit(1)
}
