// Command openbench measures reading a backup without restoring it: the
// disk of a backup read sequentially and at random through csbs mount's
// FUSE file system and csbs export's NBD server, against a restore of the
// same disk to a file (csbs repo restore's path).
//
//	go run ./bench/openbench -size 1GiB      # as root (FUSE), with qemu-img for NBD
//
// The image is a third holes, a third log text and a third random data, in
// runs of 4 MiB. It is backed up into a local repository; every read below
// starts cold in csbs (a new reader, a new mount), while the repository's
// packs stay in the page cache, as they are right after a backup. It prints
// MB/s (image bytes / 1e6 / s) for sequential reads in 1 MiB requests, the
// p50 and p99 latency of 4 KiB reads at random offsets of the data, and
// PASS/MISS for the target: sequential reads at least half the speed of a
// restore.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/mount"
	"github.com/csbs/csbs/internal/nbd"
	"github.com/csbs/csbs/internal/repository"
)

const block = 4 << 20

func main() {
	sizeFlag := flag.String("size", "1GiB", "image size (bytes, or with MiB/GiB)")
	randomReads := flag.Int("random", 2000, "random 4 KiB reads per method")
	flag.Parse()
	size, err := parseSize(*sizeFlag)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "openbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	img := filepath.Join(dir, "disk.img")
	dataBlocks := generate(img, size)
	repo, err := repository.Init(filepath.Join(dir, "repo"), []byte("bench"), repository.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer repo.Close()
	b := repo.NewBackup()
	vm, _, err := b.Volume(ctx, img, size, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	vm.VolumeID, vm.Name = "vol", "disk"
	if _, err := b.Commit(ctx, &repository.Snapshot{Volumes: []repository.VolumeManifest{*vm}}); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("image %d MiB, %d of %d 4 MiB blocks hold data; load average %s\n", size>>20, len(dataBlocks), size/block, loadavg())
	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }

	// Restore to a file, synced: the reference.
	out := filepath.Join(dir, "restored.img")
	t0 := time.Now()
	f, err := os.Create(out)
	if err != nil {
		log.Fatal(err)
	}
	if err := repo.RestoreVolume(ctx, vm, f, nil); err != nil {
		log.Fatal(err)
	}
	f.Sync()
	f.Close()
	restore := time.Since(t0)
	os.Remove(out)
	fmt.Printf("%-28s %7.2f s %8.0f MB/s\n", "restore to a file", restore.Seconds(), mbps(restore))

	open := func() *repository.VolumeReader {
		r, err := repo.OpenVolume(ctx, vm, 0)
		if err != nil {
			log.Fatal(err)
		}
		return r
	}
	rng := rand.New(rand.NewPCG(1, 2))
	offsets := make([]int64, *randomReads)
	for i := range offsets {
		offsets[i] = dataBlocks[rng.IntN(len(dataBlocks))]*block + rng.Int64N(block/4096)*4096
	}
	type result struct {
		name     string
		seq      time.Duration
		p50, p99 time.Duration
		// ref, when set, is what seq is judged against instead of the
		// restore: the same tool on the image file itself (qemu-img
		// convert costs more than the reads it makes).
		ref     time.Duration
		refName string
	}
	var results []result

	// The reader itself.
	{
		r := open()
		seq := sequential(r, size)
		r.Close()
		r = open()
		p50, p99 := random(r, offsets)
		r.Close()
		results = append(results, result{name: "VolumeReader", seq: seq, p50: p50, p99: p99})
	}

	// FUSE (csbs mount).
	if os.Geteuid() == 0 {
		for _, phase := range []string{"seq", "random"} {
			r := open()
			mnt := filepath.Join(dir, "mnt-"+phase)
			os.Mkdir(mnt, 0o755)
			srv, err := mount.Mount(mnt, &mount.Dir{Files: map[string]mount.File{"disk.img": r}}, nil)
			if err != nil {
				log.Fatal(err)
			}
			f, err := os.Open(filepath.Join(mnt, "disk.img"))
			if err != nil {
				log.Fatal(err)
			}
			if phase == "seq" {
				results = append(results, result{name: "FUSE mount", seq: sequential(f, size)})
			} else {
				p50, p99 := random(f, offsets)
				results[len(results)-1].p50, results[len(results)-1].p99 = p50, p99
			}
			f.Close()
			srv.Unmount()
			r.Close()
		}
	} else {
		fmt.Println("FUSE mount: skipped (needs root)")
	}

	// NBD (csbs export), read by a client in this process.
	for _, phase := range []string{"seq", "random"} {
		r := open()
		sock := filepath.Join(dir, "nbd-"+phase+".sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			log.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		go (&nbd.Server{Disk: nbd.VolumeDisk{VolumeReader: r}, Name: "disk"}).Serve(sctx, l)
		c := dialNBD(sock)
		if phase == "seq" {
			results = append(results, result{name: "NBD export", seq: sequential(c, size)})
		} else {
			p50, p99 := random(c, offsets)
			results[len(results)-1].p50, results[len(results)-1].p99 = p50, p99
		}
		c.conn.Close()
		cancel()
		r.Close()
	}
	if q, err := exec.LookPath("qemu-img"); err == nil {
		r := open()
		sock := filepath.Join(dir, "nbd-qemu.sock")
		l, _ := net.Listen("unix", sock)
		sctx, cancel := context.WithCancel(ctx)
		go (&nbd.Server{Disk: nbd.VolumeDisk{VolumeReader: r}, Name: "disk"}).Serve(sctx, l)
		convert := func(src string) time.Duration {
			t0 := time.Now()
			if out, err := exec.Command(q, "convert", "-f", "raw", "-O", "raw", src, filepath.Join(dir, "q.raw")).CombinedOutput(); err != nil {
				log.Fatalf("qemu-img convert %s: %v\n%s", src, err, out)
			}
			d := time.Since(t0)
			os.Remove(filepath.Join(dir, "q.raw"))
			return d
		}
		file := convert(img) // the image in the page cache
		results = append(results, result{name: "qemu-img convert from NBD", seq: convert("nbd+unix:///?socket=" + sock),
			ref: file, refName: "qemu-img from the file"})
		cancel()
		r.Close()
	}

	fmt.Printf("%-28s %9s %10s %12s %12s   target: sequential >= 50%% of restore\n", "method", "seq s", "seq MB/s", "4K p50", "4K p99")
	for _, r := range results {
		lat := func(d time.Duration) string {
			if d == 0 {
				return "-"
			}
			return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000)
		}
		ref, refName := restore, "restore"
		if r.ref != 0 {
			ref, refName = r.ref, r.refName
		}
		verdict := "MISS"
		if mbps(r.seq) >= 0.5*mbps(ref) {
			verdict = "PASS"
		}
		fmt.Printf("%-28s %9.2f %10.0f %12s %12s   %.0f%% of %s %s\n", r.name, r.seq.Seconds(), mbps(r.seq), lat(r.p50), lat(r.p99),
			100*mbps(r.seq)/mbps(ref), refName, verdict)
	}
}

// sequential reads size bytes from r in 1 MiB requests.
func sequential(r io.ReaderAt, size int64) time.Duration {
	buf := make([]byte, 1<<20)
	t0 := time.Now()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off); err != nil && err != io.EOF {
			log.Fatalf("read at %d: %v", off, err)
		}
	}
	return time.Since(t0)
}

// random reads 4 KiB at each offset and returns the p50 and p99 latency.
func random(r io.ReaderAt, offsets []int64) (p50, p99 time.Duration) {
	buf := make([]byte, 4096)
	lat := make([]time.Duration, len(offsets))
	for i, off := range offsets {
		t0 := time.Now()
		if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
			log.Fatalf("read at %d: %v", off, err)
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// nbdClient is the smallest NBD client: export-name negotiation and
// simple replies, one request at a time.
type nbdClient struct{ conn net.Conn }

func dialNBD(sock string) *nbdClient {
	c, err := net.Dial("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	hello := make([]byte, 18)
	if _, err := io.ReadFull(c, hello); err != nil {
		log.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	msg = binary.BigEndian.AppendUint64(msg, 0x49484156454f5054)
	msg = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(msg, 1), 4)
	c.Write(append(msg, "disk"...))
	io.ReadFull(c, make([]byte, 10))
	return &nbdClient{c}
}

func (c *nbdClient) ReadAt(p []byte, off int64) (int, error) {
	req := binary.BigEndian.AppendUint32(nil, 0x25609513)
	req = binary.BigEndian.AppendUint32(req, 0) // flags, read
	req = binary.BigEndian.AppendUint64(req, 1)
	req = binary.BigEndian.AppendUint64(req, uint64(off))
	req = binary.BigEndian.AppendUint32(req, uint32(len(p)))
	if _, err := c.conn.Write(req); err != nil {
		return 0, err
	}
	hdr := make([]byte, 16)
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		return 0, err
	}
	if e := binary.BigEndian.Uint32(hdr[4:]); e != 0 {
		return 0, fmt.Errorf("nbd error %d", e)
	}
	return io.ReadFull(c.conn, p)
}

// generate writes the image: per 4 MiB block a hole, log text or random
// data, in thirds. It returns the blocks holding data.
func generate(path string, size int64) []int64 {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	f.Truncate(size)
	rng := rand.New(rand.NewPCG(7, 11))
	var data []int64
	buf := make([]byte, block)
	for i := int64(0); i*block < size; i++ {
		switch i % 3 {
		case 0:
			continue
		case 1:
			var sb strings.Builder
			for sb.Len() < block {
				fmt.Fprintf(&sb, "%d app[%d]: GET /api/v1/items/%d 200 %dms\n", i, rng.IntN(1000), rng.IntN(1e6), rng.IntN(500))
			}
			copy(buf, sb.String())
		case 2:
			for k := 0; k+8 <= len(buf); k += 8 {
				binary.LittleEndian.PutUint64(buf[k:], rng.Uint64())
			}
		}
		n := min(int64(block), size-i*block)
		if _, err := f.WriteAt(buf[:n], i*block); err != nil {
			log.Fatal(err)
		}
		data = append(data, i)
	}
	return data
}

func parseSize(s string) (int64, error) {
	mul := int64(1)
	switch {
	case strings.HasSuffix(s, "GiB"):
		mul, s = 1<<30, strings.TrimSuffix(s, "GiB")
	case strings.HasSuffix(s, "MiB"):
		mul, s = 1<<20, strings.TrimSuffix(s, "MiB")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mul, err
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
