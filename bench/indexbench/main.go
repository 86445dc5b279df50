// Command indexbench measures the repository's index and garbage
// collection at scale, on a local directory:
//
//   - open: time and peak RSS of opening a repository whose index describes
//     -packs packs (default 10^5) of -chunks chunks of 4 MiB (default 8:
//     32 MiB packs of incompressible data), in a fresh process;
//
//   - gc: time of a GC over -snapshots real snapshots (default 1,000), with
//     nothing to collect, then after deleting half of them;
//
//   - start during gc: how long NewBackup takes while a GC runs (GC is slowed
//     to 5 ms per removed object, like an object store, so that it runs
//     long enough to start backups during it).
//
//     go run ./bench/indexbench
//     go run ./bench/indexbench -packs 1000000
//
// It prints PASS or MISS against the targets: open < 2 s and < 64 MiB peak
// RSS for 10^5 packs, a backup starts within 1 s while GC runs.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/repository"
	"github.com/csbs/csbs/internal/repository/blob"
	"github.com/csbs/csbs/internal/repository/blob/faulty"
	"github.com/csbs/csbs/internal/repository/blob/local"
)

var password = []byte("indexbench")

// cheap keys: the benchmark measures the index, not Argon2id.
var keyOpts = repository.Options{KDFTime: 1, KDFMemoryKiB: 64}

func main() {
	packs := flag.Int("packs", 100000, "packs in the synthetic index")
	chunks := flag.Int("chunks", 8, "chunks per synthetic pack")
	snapshots := flag.Int("snapshots", 1000, "snapshots for the GC figures")
	openDir := flag.String("open", "", "(internal) open the repository in this directory and print figures")
	emptyDir := flag.String("empty", "", "(internal) an empty repository opened first, for the heap's baseline")
	dirFlag := flag.String("dir", "", "work directory (default: a new temp dir, removed at the end)")
	flag.Parse()
	if *openDir != "" {
		openChild(*openDir, *emptyDir)
		return
	}
	dir := *dirFlag
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "indexbench-"); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average: %s", la)
	}
	ok := benchOpen(filepath.Join(dir, "big"), *packs, *chunks)
	ok = benchGC(filepath.Join(dir, "gc"), *snapshots) && ok
	if !ok {
		os.Exit(1)
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func benchOpen(dir string, packs, chunks int) bool {
	ctx := context.Background()
	start := time.Now()
	r, err := repository.Init(dir, password, keyOpts)
	if err != nil {
		log.Fatal(err)
	}
	if err := repository.WriteSyntheticIndex(ctx, r, packs, chunks); err != nil {
		log.Fatal(err)
	}
	r.Close()
	var idxBytes int64
	_ = filepath.Walk(filepath.Join(dir, "index"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			idxBytes += fi.Size()
		}
		return nil
	})
	fmt.Printf("synthetic index: %d packs x %d chunks, %d MiB of index files (written in %.1fs)\n",
		packs, chunks, idxBytes>>20, time.Since(start).Seconds())
	// A fresh process, so that its peak RSS is the open's alone.
	empty := dir + "-empty"
	if r, err := repository.Init(empty, password, keyOpts); err != nil {
		log.Fatal(err)
	} else {
		r.Close()
	}
	out, err := exec.Command(os.Args[0], "-open", dir, "-empty", empty).CombinedOutput()
	if err != nil {
		log.Fatalf("open child: %v\n%s", err, out)
	}
	f := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		f[k], _ = strconv.ParseFloat(v, 64)
	}
	secs, rss, base, entries := f["seconds"], f["rss_mib"], f["base_rss_mib"], f["entries"]
	heap, heap0 := f["heap_mib"], f["empty_heap_mib"]
	okT, okM := secs < 2, rss < 64
	fmt.Printf("open:  %.2fs (CPU %.2fs)  %s (target < 2 s)\n", secs, f["cpu_seconds"], verdict(okT))
	fmt.Printf("       peak RSS %.0f MiB (%.0f MiB before the open)  %s (target < 64 MiB)\n", rss, base, verdict(okM))
	fmt.Printf("       %.0f chunk entries; Go heap in use %.1f MiB (%.1f MiB with an empty repository) = %.1f bytes per chunk\n",
		entries, heap, heap0, (heap-heap0)*(1<<20)/entries)
	return okT && okM
}

func openChild(dir, empty string) {
	e, err := repository.Open(empty, password, keyOpts)
	if err != nil {
		log.Fatal(err)
	}
	heap0 := heapMiB()
	base := vmHWM()
	cpu0 := cpuSeconds()
	start := time.Now()
	r, err := repository.Open(dir, password, keyOpts)
	if err != nil {
		log.Fatal(err)
	}
	secs := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	st := r.IndexStats()
	fmt.Printf("cpu_seconds=%f\nseconds=%f\nrss_mib=%f\nbase_rss_mib=%f\nentries=%d\nheap_mib=%f\nempty_heap_mib=%f\n",
		cpu, secs, float64(vmHWM())/(1<<20), float64(base)/(1<<20), st.Entries, heapMiB(), heap0)
	r.Close()
	e.Close()
}

func benchGC(dir string, n int) bool {
	ctx := context.Background()
	opts := keyOpts
	opts.ChunkSize, opts.PackSize, opts.GCMargin = 64<<10, 4<<20, time.Nanosecond
	r, err := repository.Init(dir, password, opts)
	if err != nil {
		log.Fatal(err)
	}
	// n backups of a 2 MiB image (32 chunks), 2 chunks changed each time.
	img := filepath.Join(dir, "..", "gc-image")
	data := make([]byte, 32*64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	fill(data)
	start := time.Now()
	var ids []string
	for i := range n {
		for range 2 {
			k := rng.IntN(32)
			fill(data[k*64<<10 : (k+1)*64<<10])
		}
		if err := os.WriteFile(img, data, 0o600); err != nil {
			log.Fatal(err)
		}
		b := r.NewBackup()
		vm, _, err := b.Volume(ctx, img, int64(len(data)), nil, nil)
		if err != nil {
			log.Fatal(err)
		}
		id, err := b.Commit(ctx, &repository.Snapshot{Meta: map[string]string{"n": strconv.Itoa(i)}, Volumes: []repository.VolumeManifest{*vm}})
		if err != nil {
			log.Fatal(err)
		}
		ids = append(ids, id)
	}
	r.Close()
	fmt.Printf("gc repository: %d snapshots of a 2 MiB image (64 KiB chunks, 4 MiB packs), made in %.1fs\n", n, time.Since(start).Seconds())

	r, err = repository.Open(dir, password, opts)
	if err != nil {
		log.Fatal(err)
	}
	t := time.Now()
	st, err := r.GC(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("gc:    %.2fs with %d snapshots, nothing to collect (%+v)\n", time.Since(t).Seconds(), n, st)
	for i := 0; i < len(ids); i += 2 {
		if err := r.DeleteSnapshot(ctx, ids[i]); err != nil {
			log.Fatal(err)
		}
	}
	t = time.Now()
	st, err = r.GC(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("gc:    %.2fs after deleting %d of them: %d packs deleted, %d rewritten, %d MiB freed\n",
		time.Since(t).Seconds(), (n+1)/2, st.PacksDeleted, st.PacksRewritten, st.BytesFreed>>20)
	r.Close()

	// Backups starting while a slow GC runs.
	l, err := local.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	fb := faulty.Wrap(l)
	slow := func(context.Context, blob.Handle) error { time.Sleep(5 * time.Millisecond); return nil }
	fb.Add(faulty.Rule{Op: faulty.Remove, Type: blob.PackFile, Hook: slow})
	fb.Add(faulty.Rule{Op: faulty.Remove, Type: blob.IndexFile, Hook: slow})
	r, err = repository.OpenBackend(ctx, fb, password, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	for i := 1; i < len(ids); i += 2 {
		if err := r.DeleteSnapshot(ctx, ids[i]); err != nil {
			log.Fatal(err)
		}
	}
	other, err := repository.Open(dir, password, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close()
	gcDone := make(chan time.Duration)
	t = time.Now()
	go func() {
		if _, err := r.GC(ctx); err != nil && !errors.Is(err, repository.ErrBusy) {
			log.Fatal(err)
		}
		gcDone <- time.Since(t)
	}()
	var starts []time.Duration
	var gcTime time.Duration
loop:
	for {
		select {
		case gcTime = <-gcDone:
			break loop
		case <-time.After(100 * time.Millisecond):
		}
		for _, rr := range []*repository.Repository{r, other} {
			s := time.Now()
			b := rr.NewBackup()
			starts = append(starts, time.Since(s))
			b.Abort()
		}
	}
	if len(starts) == 0 {
		fmt.Println("start during gc: GC ended before a backup could start; no figure")
		return true
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	worst := starts[len(starts)-1]
	fmt.Printf("start during gc: %d backups started while a %.1fs GC ran (same and other process): median %.1f ms, worst %.1f ms  %s (target < 1 s)\n",
		len(starts), gcTime.Seconds(), ms(starts[len(starts)/2]), ms(worst), verdict(worst < time.Second))
	return worst < time.Second
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func vmHWM() int64 { return procStatus("VmHWM:") }

func procStatus(key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
