// Command cpufloor measures the compute floor of a full backup of a disk
// image on this machine: the wall time of the work that csbs's repository
// does on every chunk holding data (internal/repository: (*volume).chunk),
// run on every CPU at once, with no I/O. A full backup reads the image and
// writes its packs besides, so it cannot be faster than this on these CPUs,
// whatever the pipeline around the kernels.
//
// The work, as in the repository with its defaults (chunks of
// repository.DefaultChunkSize, a first backup: S2): every chunk that is not
// all zeros is hashed (keyed BLAKE3: its id); the first chunk of each id is
// compressed with S2 when that shrinks it, and sealed with AES-256-GCM. Each phase is also timed alone
// (hash only, compress only, seal only), so the report says where the time
// goes. Every figure is the fastest of -rounds. The kernels are the
// repository's libraries called directly (the repository does not export
// them): a change of codec, hash or cipher there must be made here too.
//
// Usage:
//
//	cpufloor -image disk.img [-rounds 3]
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/zeebo/blake3"

	"github.com/csbs/csbs/internal/repository"
)

const chunkSize = repository.DefaultChunkSize

// chunk is one chunk of the image holding data; first is false for a
// chunk whose content an earlier chunk has (stored once).
type chunk struct {
	data  []byte
	first bool
}

func main() {
	image := flag.String("image", "", "the disk image (bench/genimage's disk.img)")
	rounds := flag.Int("rounds", 3, "rounds; the fastest of each phase is reported")
	flag.Parse()
	if *image == "" {
		log.Fatal("cpufloor: -image is required")
	}
	chunks, err := load(*image)
	if err != nil {
		log.Fatalf("cpufloor: %v", err)
	}
	var data, unique int64
	for _, c := range chunks {
		data += int64(len(c.data))
		if c.first {
			unique += int64(len(c.data))
		}
	}
	cpus := runtime.GOMAXPROCS(0)
	fmt.Printf("cpufloor: %d chunks of data (%d MiB), %d MiB unique, on %d CPUs (fastest of %d rounds)\n",
		len(chunks), data>>20, unique>>20, cpus, *rounds)

	phases := []struct {
		name string
		work func(w *worker, c chunk)
	}{
		{"hash", func(w *worker, c chunk) { w.hash(c.data) }},
		{"compress", func(w *worker, c chunk) {
			if c.first {
				w.compress(c.data)
			}
		}},
		{"seal", func(w *worker, c chunk) {
			if c.first {
				w.seal(c.data) // the upper bound: as if nothing compressed
			}
		}},
		{"all", func(w *worker, c chunk) {
			w.hash(c.data)
			if c.first {
				w.seal(w.compress(c.data))
			}
		}},
	}
	for _, p := range phases {
		best := time.Duration(1<<63 - 1)
		for range *rounds {
			best = min(best, run(chunks, cpus, p.work))
		}
		fmt.Printf("%-9s %7.3f s\n", p.name, best.Seconds())
	}
	fmt.Println("all: hash every chunk, compress and seal the unique ones: the floor under a full backup on these CPUs")
}

// load reads the image and keeps its chunks that are not all zeros,
// marking the first of each content.
func load(path string) ([]chunk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zero := make([]byte, chunkSize)
	seen := map[[32]byte]bool{}
	var chunks []chunk
	for {
		buf := make([]byte, chunkSize)
		n, err := io.ReadFull(f, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			id := blake3.Sum256(buf[:n])
			chunks = append(chunks, chunk{data: buf[:n], first: !seen[id]})
			seen[id] = true
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return chunks, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// worker holds what one repository worker holds: a hasher, a compression
// buffer, a sealing buffer.
type worker struct {
	h    *blake3.Hasher
	aead cipher.AEAD
	out  []byte
	blob []byte
}

func newWorker() *worker {
	h, err := blake3.NewKeyed(make([]byte, 32))
	if err != nil {
		panic(err)
	}
	block, err := aes.NewCipher(make([]byte, 32))
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &worker{h: h, aead: aead, out: make([]byte, s2.MaxEncodedLen(chunkSize)), blob: make([]byte, 0, chunkSize+64)}
}

func (w *worker) hash(data []byte) {
	w.h.Reset()
	_, _ = w.h.Write(data)
	var id [32]byte
	w.h.Sum(id[:0])
}

// compress returns what the repository stores of data: S2's output when it
// is shorter, else data.
func (w *worker) compress(data []byte) []byte {
	if enc := s2.Encode(w.out, data); len(enc) < len(data) {
		return enc
	}
	return data
}

func (w *worker) seal(data []byte) {
	var nonce [12]byte
	w.blob = w.aead.Seal(w.blob[:0], nonce[:], data, nil)
}

// run does work on every chunk with n goroutines and returns the wall time.
func run(chunks []chunk, n int, work func(*worker, chunk)) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := make([]*worker, n)
	for i := range workers {
		workers[i] = newWorker()
	}
	start := time.Now()
	for _, w := range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(chunks)) {
					return
				}
				work(w, chunks[i])
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}
