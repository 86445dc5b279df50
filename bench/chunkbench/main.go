// Command chunkbench measures what the chunk size costs and saves: for each
// chunk size it backs up the image of bench/backup.sh into a fresh local
// repository, then backs it up again after each incremental scenario of
// backup.sh (bench/mutate, written in place: 1% of 4 MiB blocks, 2,000
// clustered 4 KiB writes, 64 MiB appended), and prints each backup's time
// and the repository's growth, then the index's memory: Go heap per chunk
// entry (a synthetic index of about 400,000 entries in packs of 32 MiB,
// opened in the process, against an empty repository) and per TiB of
// unique data stored at that chunk size.
//
// The backups read the whole image each time (no changed-block tracking):
// growth depends on the chunk size only, time is that of reading and
// hashing the whole disk.
//
// Usage:
//
//	go run ./bench/chunkbench -size-mb 2048 -chunks 4096,1024,512
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/repository"
)

var steps = []struct {
	name string
	args []string
}{
	{"incr", []string{"-scenario", "blocks", "-from", "IMG/changed.img"}},
	{"clustered", []string{"-scenario", "clustered", "-writes", "2000", "-regions", "50", "-seed", "2"}},
	{"append", []string{"-scenario", "append", "-mb", "64", "-seed", "3"}},
}

func main() {
	sizeMB := flag.Int("size-mb", 2048, "image size in MiB")
	chunks := flag.String("chunks", "4096,1024,512", "chunk sizes in KiB, comma-separated")
	work := flag.String("work", "", "work directory (default: a new temporary one, removed at the end)")
	flag.Parse()
	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "chunkbench-")
		check(err)
		tempDir = d
		defer os.RemoveAll(d)
		dir = d
	}
	bin := filepath.Join(dir, "bin")
	img := filepath.Join(dir, "img")
	run("go", "build", "-o", bin+"/", "./bench/genimage", "./bench/mutate")
	check(os.MkdirAll(img, 0o755))
	run(filepath.Join(bin, "genimage"), "-size-mb", strconv.Itoa(*sizeMB), "-seed", "1", "-changed-pct", "1", "-dir", img)
	disk := filepath.Join(dir, "disk.img")

	fmt.Printf("chunkbench: image %d MiB; load average at start %s\n", *sizeMB, loadavg())
	fmt.Printf("%-9s %-10s %9s %12s %12s\n", "chunk", "step", "seconds", "read MiB", "growth MiB")
	type mem struct {
		cs      int
		entries int
		perEnt  float64
	}
	var mems []mem
	for _, f := range strings.Split(*chunks, ",") {
		kib, err := strconv.Atoi(strings.TrimSpace(f))
		check(err)
		cs := kib << 10
		run("cp", "--sparse=always", filepath.Join(img, "disk.img"), disk)
		repoDir := filepath.Join(dir, "repo-"+strconv.Itoa(kib))
		opts := repository.Options{ChunkSize: cs, KDFTime: 1, KDFMemoryKiB: 64}
		r, err := repository.Init(repoDir, []byte("bench"), opts)
		check(err)
		ctx := context.Background()
		var parent *repository.VolumeManifest
		size0 := int64(0)
		for i, st := range append([]struct {
			name string
			args []string
		}{{"full", nil}}, steps...) {
			if st.args != nil {
				args := make([]string, 0, len(st.args)+2)
				for _, a := range st.args {
					args = append(args, strings.ReplaceAll(a, "IMG", img))
				}
				run(filepath.Join(bin, "mutate"), append([]string{"-image", disk}, args...)...)
			}
			fi, err := os.Stat(disk)
			check(err)
			t0 := time.Now()
			b := r.NewBackup()
			vm, vs, err := b.Volume(ctx, disk, fi.Size(), parent, nil)
			check(err)
			vm.VolumeID = "disk"
			_, err = b.Commit(ctx, &repository.Snapshot{ID: fmt.Sprintf("%032x", i+1), Time: time.Now(),
				Volumes: []repository.VolumeManifest{*vm}})
			check(err)
			secs := time.Since(t0).Seconds()
			parent = vm
			size, err := r.Size(ctx)
			check(err)
			fmt.Printf("%-9s %-10s %9.3f %12.1f %12.1f\n", human(cs), st.name, secs, float64(vs.ReadBytes)/(1<<20), float64(size-size0)/(1<<20))
			size0 = size
		}
		check(r.Close())
		perEnt, n, err := entryHeap(dir, kib, opts)
		check(err)
		mems = append(mems, mem{cs: cs, entries: n, perEnt: perEnt})
		os.RemoveAll(repoDir)
	}
	fmt.Printf("\nindex memory (Go heap per chunk entry of a synthetic index of packs of 32 MiB, opened in this process; per TiB of unique data stored at that chunk size):\n")
	fmt.Printf("%-9s %9s %14s %16s %14s\n", "chunk", "entries", "bytes/entry", "entries/TiB", "MiB per TiB")
	for _, m := range mems {
		perTiB := float64(int64(1)<<40) / float64(m.cs)
		fmt.Printf("%-9s %9d %14.1f %16.0f %14.1f\n", human(m.cs), m.entries, m.perEnt, perTiB, perTiB*m.perEnt/(1<<20))
	}
	fmt.Printf("load average at end %s\n", loadavg())
}

// entryHeap measures the Go heap that the index of a repository of chunk
// size kib KiB costs per chunk entry: a synthetic index of about 400,000
// entries in packs of 32 MiB is opened after an empty repository, each
// alone, and the difference of the heaps in use is divided by the entries.
func entryHeap(dir string, kib int, opts repository.Options) (float64, int, error) {
	ctx := context.Background()
	full, empty := filepath.Join(dir, "index-"+strconv.Itoa(kib)), filepath.Join(dir, "empty-"+strconv.Itoa(kib))
	defer os.RemoveAll(full)
	defer os.RemoveAll(empty)
	perPack := (32 << 20) / (kib << 10)
	for _, d := range []string{full, empty} {
		r, err := repository.Init(d, []byte("bench"), opts)
		if err != nil {
			return 0, 0, err
		}
		if d == full {
			if err := repository.WriteSyntheticIndex(ctx, r, 400000/perPack, perPack); err != nil {
				return 0, 0, err
			}
		}
		if err := r.Close(); err != nil {
			return 0, 0, err
		}
	}
	open := func(d string) (uint64, int, error) {
		r, err := repository.Open(d, []byte("bench"), opts)
		if err != nil {
			return 0, 0, err
		}
		h := heap()
		n := r.IndexStats().Entries
		return h, n, r.Close()
	}
	h0, _, err := open(empty)
	if err != nil {
		return 0, 0, err
	}
	h1, n, err := open(full)
	if err != nil {
		return 0, 0, err
	}
	return float64(int64(h1)-int64(h0)) / float64(n), n, nil
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func human(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + " MiB"
	}
	return strconv.Itoa(n>>10) + " KiB"
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func run(name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	if out, err := cmd.Output(); err != nil {
		fmt.Fprintf(os.Stderr, "chunkbench: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		exit()
	}
}

// tempDir is the work directory made by this run, removed on failure too.
var tempDir string

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "chunkbench:", err)
		exit()
	}
}

func exit() {
	if tempDir != "" {
		os.RemoveAll(tempDir)
	}
	os.Exit(1)
}
