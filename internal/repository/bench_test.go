package repository

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Benchmarks of the hot path per 4 MiB chunk. Whole-volume throughput is
// measured by bench/repobench (a program, so it can report peak RSS).

func benchChunk(kind string) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	switch kind {
	case "text":
		return textBytes(rng, 4<<20)
	default:
		return randomBytes(rng, 4<<20)
	}
}

func BenchmarkHash(b *testing.B) {
	k, _ := deriveKeys(make([]byte, masterKeyLen))
	h := newHasher(k)
	data := benchChunk("random")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h.sum(data)
	}
}

func BenchmarkSealChunk(b *testing.B) {
	k, _ := deriveKeys(make([]byte, masterKeyLen))
	for _, c := range []Compression{CompressS2, CompressZstd} {
		for _, kind := range []string{"text", "random"} {
			b.Run(string(c)+"/"+kind, func(b *testing.B) {
				s := newSlot(4 << 20)
				data := benchChunk(kind)
				b.SetBytes(int64(len(data)))
				var stored int
				for b.Loop() {
					blob, _ := sealChunk(s, c, k.aead, ChunkID{1}, data)
					stored = len(blob)
				}
				b.ReportMetric(float64(stored)/float64(len(data)), "ratio")
			})
		}
	}
}

func BenchmarkZstdLevels(b *testing.B) {
	data := benchChunk("text")
	for _, tc := range []struct {
		name string
		opts []zstd.EOption
	}{
		{"fastest", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest)}},
		{"fastest-noentropy", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithNoEntropyCompression(true)}},
		{"fastest-lowmem", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithLowerEncoderMem(true)}},
		{"fastest-window", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(1 << 17)}},
		{"default", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			enc, _ := zstd.NewWriter(nil, append(tc.opts, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))...)
			out := make([]byte, 0, 5<<20)
			b.SetBytes(int64(len(data)))
			var n int
			for b.Loop() {
				n = len(enc.EncodeAll(data, out[:0]))
			}
			b.ReportMetric(float64(n)/float64(len(data)), "ratio")
		})
	}
}

func BenchmarkOpenChunk(b *testing.B) {
	k, _ := deriveKeys(make([]byte, masterKeyLen))
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true))
	for _, kind := range []string{"text", "random"} {
		b.Run(kind, func(b *testing.B) {
			s := newSlot(4 << 20)
			data := benchChunk(kind)
			h := newHasher(k)
			id := h.sum(data)
			blob, flags := sealChunk(s, CompressZstd, k.aead, id, data)
			work := make([]byte, len(blob))
			out := make([]byte, len(data))
			loc := location{length: uint32(len(blob)), rawLen: uint32(len(data)), flags: flags}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				copy(work, blob)
				if _, err := openChunk(k, dec, h, id, loc, work, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBackupRestore runs a full backup, an incremental one and a
// restore of a 256 MiB image like the one repobench generates.
func BenchmarkBackupRestore(b *testing.B) {
	dir := b.TempDir()
	img := filepath.Join(dir, "img")
	size := int64(256 << 20)
	var regs []region
	for i := int64(0); i < size/(4<<20); i++ {
		kind := []string{"hole", "text", "random"}[i%3]
		regs = append(regs, region{kind: kind, off: i * 4 << 20, n: 4 << 20})
	}
	writeImage(b, img, size, 1, regs...)
	opts := Options{KDFTime: 1, KDFMemoryKiB: 64}
	ctx := context.Background()
	b.Run("full", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			r, err := Init(filepath.Join(b.TempDir(), "r"), password, opts)
			if err != nil {
				b.Fatal(err)
			}
			bk := r.NewBackup()
			if _, _, err := bk.Volume(ctx, img, size, nil, nil); err != nil {
				b.Fatal(err)
			}
			bk.Abort()
			r.Close()
		}
	})
	r, err := Init(filepath.Join(b.TempDir(), "r"), password, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	bk := r.NewBackup()
	vm, _, err := bk.Volume(ctx, img, size, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bk.Commit(ctx, &Snapshot{Volumes: []VolumeManifest{*vm}}); err != nil {
		b.Fatal(err)
	}
	b.Run("incremental", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			bk := r.NewBackup()
			if _, _, err := bk.Volume(ctx, img, size, vm, nil); err != nil {
				b.Fatal(err)
			}
			bk.Abort()
		}
	})
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(size)
		out := filepath.Join(b.TempDir(), "out")
		for b.Loop() {
			f, _ := os.Create(out)
			if err := r.RestoreVolume(ctx, vm, f, nil); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
