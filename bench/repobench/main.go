// Command repobench measures the backup repository on a generated VM-like
// disk image: full backup, incremental backup of a copy with 1% of its 4 MiB
// blocks rewritten, restore, and verify (of the incremental backup, as the
// service's verification reads it: every chunk authenticated and
// re-hashed). It prints MB/s of image size and peak RSS; verify also MB/s
// of the data it read.
//
//	go run ./bench/repobench -size 2GiB
//
// The image is ~30% holes, ~30% compressible text, ~30% random and ~10%
// blocks duplicated from elsewhere in the image. It is read once before
// timing, so it is in the page cache. With -images DIR it takes instead the
// disk.img and changed.img that bench/genimage wrote in DIR: the image the
// peers (restic, Borg) are measured on by bench/backup.sh.
//
// -backends local,s3 runs the same three steps on a local directory and on
// an S3 bucket of a versitygw started on loopback (its posix backend in the
// work directory), -rounds times, interleaved, and prints the medians and
// the ratio S3/local of each step (target: at least 0.5).
//
// It runs with csbs's GOMAXPROCS (repository.Procs) unless the environment
// sets one.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/repository/blob/s3"
	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

const block = 4 << 20

func main() {
	sizeFlag := flag.String("size", "2GiB", "image size (bytes, or with MiB/GiB); ignored with -images")
	dirFlag := flag.String("dir", "", "work directory (default: a new temp dir, removed at the end)")
	images := flag.String("images", "", "directory holding disk.img and changed.img from bench/genimage (default: generate an image)")
	workers := flag.Int("workers", 0, "repository workers (0: number of CPUs)")
	backends := flag.String("backends", "local", "comma-separated: local, s3 (versitygw on loopback)")
	rounds := flag.Int("rounds", 1, "rounds; each runs every backend on a fresh repository, interleaved")
	vgw := flag.String("versitygw", "", "versitygw binary (default: from PATH or GOPATH/bin)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the timed phases to this file")
	flag.Parse()
	runtime.GOMAXPROCS(repository.Procs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0))) // as csbs runs
	dir := *dirFlag
	var err error
	if dir == "" {
		if dir, err = os.MkdirTemp("", "repobench-"); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	var img, img2 string
	var size int64
	if *images != "" {
		img, img2 = filepath.Join(*images, "disk.img"), filepath.Join(*images, "changed.img")
		fi, err := os.Stat(img)
		if err != nil {
			log.Fatal(err)
		}
		size = fi.Size()
		fmt.Printf("image %s (%d MiB) and %s\n", img, size>>20, img2)
	} else {
		if size, err = parseSize(*sizeFlag); err != nil {
			log.Fatal(err)
		}
		img, img2 = filepath.Join(dir, "image"), filepath.Join(dir, "image2")
		fmt.Printf("generating %d MiB image in %s\n", size>>20, dir)
		changed := generate(img, img2, size)
		fmt.Printf("(%d of %d blocks rewritten in the copy)\n", changed, size/block)
	}
	// Write the image to disk now, so its writeback does not compete with
	// the timed phases; it stays in the page cache.
	syscall.Sync()
	warm(img)
	warm(img2)
	want := sum(img2)
	hwmStart := vmHWM()

	var srv *s3test.Server
	bes := strings.Split(*backends, ",")
	for _, be := range bes {
		switch be {
		case "local":
		case "s3":
			bin := *vgw
			if bin == "" {
				bin = s3test.Binary()
			}
			if bin == "" {
				log.Fatal("versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0, or give -versitygw")
			}
			if srv == nil {
				if srv, err = s3test.Launch(bin, filepath.Join(dir, "versitygw")); err != nil {
					log.Fatal(err)
				}
				defer srv.Kill()
				fmt.Printf("versitygw %s serving %s\n", srv.Endpoint, srv.Dir)
			}
		default:
			log.Fatalf("-backends: unknown backend %q", be)
		}
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	opts := repository.Options{Workers: *workers, KDFTime: 1, KDFMemoryKiB: 64 << 10}
	times := map[string]map[string][]float64{} // backend -> step -> seconds
	for round := 1; round <= *rounds; round++ {
		for _, be := range bes {
			fmt.Printf("\n== round %d, %s\n", round, be)
			t := bench(be, round, dir, srv, opts, img, img2, size, want)
			if times[be] == nil {
				times[be] = map[string][]float64{}
			}
			for step, d := range t {
				times[be][step] = append(times[be][step], d)
			}
		}
	}
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	fmt.Printf("\npeak RSS     %d MiB (%d MiB before the timed phases)\n", vmHWM()>>20, hwmStart>>20)
	if *rounds > 1 || len(bes) > 1 {
		fmt.Printf("\nmedians of %d rounds (MB/s of image size; all rounds in seconds):\n", *rounds)
		for _, be := range bes {
			for _, step := range steps {
				ts := times[be][step]
				fmt.Printf("%-6s %-12s %8.0f MB/s  %v\n", be, step, float64(size)/median(ts)/1e6, ts)
			}
		}
	}
	if times["local"] != nil && times["s3"] != nil {
		// Wall-clock time is what the target is about; on a machine shared
		// with other work it swings, so the CPU time of csbs plus the store
		// (both on this machine) is shown too: the cost an idle machine pays.
		fmt.Println("\nS3 (versitygw on loopback) / local, median throughput (wall clock; CPU of csbs + versitygw); target >= 0.5:")
		for _, step := range steps {
			ratio := median(times["local"][step]) / median(times["s3"][step])
			cpuRatio := median(times["local"][step+" cpu"]) / median(times["s3"][step+" cpu"])
			verdict := "PASS"
			if ratio < 0.5 {
				verdict = "MISS"
			}
			fmt.Printf("%-12s %.2fx  %s   (CPU %.1fs vs %.1fs: %.2fx)\n", step, ratio, verdict,
				median(times["s3"][step+" cpu"]), median(times["local"][step+" cpu"]), cpuRatio)
		}
	}
}

var steps = []string{"full", "incremental", "restore", "verify"}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// bench runs full, incremental and restore on a fresh repository on
// backend be and returns the seconds of each step.
func bench(be string, round int, dir string, srv *s3test.Server, opts repository.Options, img, img2 string, size int64, want [32]byte) map[string]float64 {
	ctx := context.Background()
	var r *repository.Repository
	var err error
	var cleanup func()
	switch be {
	case "local":
		p := filepath.Join(dir, fmt.Sprintf("repo-%d", round))
		r, err = repository.Init(p, []byte("bench"), opts)
		cleanup = func() { os.RemoveAll(p) }
	case "s3":
		bucket := fmt.Sprintf("repobench-%d", round)
		if err := srv.CreateBucket(ctx, bucket); err != nil {
			log.Fatal(err)
		}
		var b *s3.Backend
		if b, err = s3.Open(ctx, srv.Config(bucket, "repo")); err != nil {
			log.Fatal(err)
		}
		r, err = repository.InitBackend(ctx, b, []byte("bench"), opts)
		cleanup = func() { os.RemoveAll(filepath.Join(srv.Dir, bucket)) }
	}
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	out := map[string]float64{}
	// The store's CPU counts too: on loopback it shares the machine.
	srvCPU := func() time.Duration { return 0 }
	if be == "s3" {
		srvCPU = func() time.Duration { return procCPU(srv.Pid()) }
	}
	var snaps []string
	run := func(name, path string, parent *repository.VolumeManifest) *repository.VolumeManifest {
		start, cpu0, scpu0 := time.Now(), cpuTime(), srvCPU()
		b := r.NewBackup()
		vm, st, err := b.Volume(ctx, path, size, parent, nil)
		if err != nil {
			log.Fatal(err)
		}
		vm.VolumeID = name
		read := time.Since(start)
		id, err := b.Commit(ctx, &repository.Snapshot{Volumes: []repository.VolumeManifest{*vm}})
		if err != nil {
			log.Fatal(err)
		}
		snaps = append(snaps, id)
		d, cpu, scpu := time.Since(start), cpuTime()-cpu0, srvCPU()-scpu0
		out[name] = d.Seconds()
		out[name+" cpu"] = (cpu + scpu).Seconds()
		fmt.Printf("%-12s %8.0f MB/s  %6.2fs (volume %.2fs, commit %.2fs)  CPU %.2fs = %.0f MB/s on %d idle cores  RSS %d MiB%s\n",
			name, float64(size)/d.Seconds()/1e6, d.Seconds(), read.Seconds(), (d - read).Seconds(),
			cpu.Seconds(), float64(size)/(cpu.Seconds()/float64(runtime.NumCPU()))/1e6, runtime.NumCPU(), vmHWM()>>20, serverCPU(be, scpu))
		fmt.Printf("             used %d MiB, changed %d MiB, new %d MiB, stored %d MiB, chunks %d new %d\n",
			st.UsedBytes>>20, st.ChangedBytes>>20,
			st.NewBytes>>20, st.StoredBytes>>20, st.Chunks, st.NewChunks)
		return vm
	}
	vm1 := run("full", img, nil)
	vm2 := run("incremental", img2, vm1)

	restored := filepath.Join(dir, "restored")
	f, err := os.OpenFile(restored, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(restored)
	start, cpu0, scpu0 := time.Now(), cpuTime(), srvCPU()
	if err := r.RestoreVolume(ctx, vm2, f, nil); err != nil {
		log.Fatal(err)
	}
	d, cpu, scpu := time.Since(start), cpuTime()-cpu0, srvCPU()-scpu0
	f.Close()
	out["restore"] = d.Seconds()
	out["restore cpu"] = (cpu + scpu).Seconds()
	fmt.Printf("%-12s %8.0f MB/s  %6.2fs  CPU %.2fs = %.0f MB/s on %d idle cores  RSS %d MiB%s\n", "restore",
		float64(size)/d.Seconds()/1e6, d.Seconds(), cpu.Seconds(), float64(size)/(cpu.Seconds()/float64(runtime.NumCPU()))/1e6, runtime.NumCPU(), vmHWM()>>20, serverCPU(be, scpu))
	// Verify the incremental backup as the service does: every chunk it
	// references read, authenticated and re-hashed.
	start, cpu0, scpu0 = time.Now(), cpuTime(), srvCPU()
	vr, err := r.VerifySnapshots(ctx, snaps[1:])
	if err != nil || !vr.OK() {
		log.Fatalf("verify: %v %v", err, vr)
	}
	d, cpu, scpu = time.Since(start), cpuTime()-cpu0, srvCPU()-scpu0
	out["verify"] = d.Seconds()
	out["verify cpu"] = (cpu + scpu).Seconds()
	fmt.Printf("%-12s %8.0f MB/s  %6.2fs  %d chunks, %d MiB of data: %.0f MB/s of data  CPU %.2fs  RSS %d MiB%s\n", "verify",
		float64(size)/d.Seconds()/1e6, d.Seconds(), vr.Chunks, vr.Bytes>>20, float64(vr.Bytes)/d.Seconds()/1e6, cpu.Seconds(), vmHWM()>>20, serverCPU(be, scpu))
	rs, _ := r.Size(ctx)
	if err := r.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("repository   %d MiB for %d MiB of image\n", rs>>20, size>>20)
	if sum(restored) != want {
		log.Fatal("restored image differs from the original")
	}
	fmt.Println("restore verified (SHA-256 equal)")
	return out
}

// generate writes the image and a copy with 1% of blocks rewritten; it
// returns the number of rewritten blocks.
func generate(path, path2 string, size int64) int {
	rng := rand.New(rand.NewPCG(1, 2))
	vocab := make([]string, 4096)
	for i := range vocab {
		w := make([]byte, 2+rng.IntN(9))
		for j := range w {
			w[j] = byte('a' + rng.IntN(26))
		}
		vocab[i] = string(w)
	}
	f := create(path)
	g := create(path2)
	n := int(size / block)
	kinds := make([]byte, n)
	for i := range kinds {
		switch x := rng.IntN(100); {
		case x < 30:
			kinds[i] = 'h'
		case x < 60:
			kinds[i] = 't'
		case x < 90:
			kinds[i] = 'r'
		default:
			kinds[i] = 'd'
		}
	}
	// Exactly 1% of all blocks (rounded up) are rewritten in the copy,
	// chosen among the blocks that hold data.
	rewrite := make(map[int]bool)
	for want := (n + 99) / 100; len(rewrite) < want; {
		if i := rng.IntN(n); kinds[i] == 't' || kinds[i] == 'r' {
			rewrite[i] = true
		}
	}
	buf := make([]byte, block)
	var written []int64
	changed := 0
	for i, k := range kinds {
		off := int64(i) * block
		switch k {
		case 'h':
			continue
		case 't':
			fillText(rng, vocab, buf)
		case 'r':
			fillRandom(rng, buf)
		case 'd':
			if len(written) == 0 {
				continue
			}
			src := written[rng.IntN(len(written))]
			if _, err := f.ReadAt(buf, src); err != nil {
				log.Fatal(err)
			}
		}
		must(f.WriteAt(buf, off))
		written = append(written, off)
		if rewrite[i] {
			fillRandom(rng, buf)
			changed++
		}
		must(g.WriteAt(buf, off))
	}
	for _, h := range []*os.File{f, g} {
		if err := h.Truncate(size); err != nil {
			log.Fatal(err)
		}
		h.Close()
	}
	return changed
}

func create(p string) *os.File {
	f, err := os.Create(p)
	if err != nil {
		log.Fatal(err)
	}
	return f
}

func must(_ int, err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func fillText(rng *rand.Rand, vocab []string, b []byte) {
	i := 0
	for i < len(b) {
		// Zipf-like: small indexes are much more frequent.
		w := vocab[int(float64(len(vocab))*rng.Float64()*rng.Float64()*rng.Float64())]
		i += copy(b[i:], w)
		if i < len(b) {
			if rng.IntN(10) == 0 {
				b[i] = '\n'
			} else {
				b[i] = ' '
			}
			i++
		}
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		b[i], b[i+1], b[i+2], b[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		b[i+4], b[i+5], b[i+6], b[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
}

func warm(p string) {
	f, err := os.Open(p)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	io.Copy(io.Discard, f)
}

func sum(p string) [32]byte {
	f, err := os.Open(p)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, bufio.NewReaderSize(f, 1<<20))
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// cpuTime returns the user+system CPU time of this process so far. On a
// machine shared with other work, wall-clock throughput understates what
// the code does; CPU time divided over the cores is the figure an idle
// machine would approach (when the phase is CPU-bound).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the user+system CPU time of process pid so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func serverCPU(be string, d time.Duration) string {
	if be != "s3" {
		return ""
	}
	return fmt.Sprintf("  versitygw CPU %.2fs", d.Seconds())
}

// vmHWM returns the peak resident set size of this process.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if rest, ok := strings.CutSuffix(s, suf); ok {
			s, mult = rest, m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return n * mult, nil
}
