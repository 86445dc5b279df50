// Command libvirtbench measures what changed-block tracking through QEMU's
// dirty bitmaps buys: a running KVM domain whose qcow2 disk holds the peer
// image (bench/genimage), 1% of its 4 MiB blocks rewritten by the guest
// between two backups. It times, through the libvirt compute driver and the
// repository exactly as the protect job uses them:
//
//	full         the first backup (every allocated byte read)
//	incremental  the next backup (only the dirty bitmap's extents read)
//	full read    the same disk backed up again without a parent (every
//	             allocated byte read and hashed; the data deduplicates)
//	local        the raw image file read by the local driver (no QEMU)
//
// and prints PASS or MISS for "incremental at least 10x faster than a full
// read". With restic installed (Debian: restic) it backs up the same image
// file with restic too, full and after the same change. Run as root on a machine with KVM and libvirtd (scripts/test.sh
// sets them up):
//
//	go run ./bench/libvirtbench                   # 2 GiB, about 2 minutes
//	go run ./bench/libvirtbench -size-mb 512      # quick
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/csbs/csbs/internal/compute"
	"github.com/csbs/csbs/internal/compute/libvirt"
	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/repository"
)

const block = 4 << 20

func main() {
	sizeMB := flag.Int("size-mb", 2048, "disk size in MiB")
	pct := flag.Float64("changed-pct", 1, "percent of 4 MiB blocks the guest rewrites")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "libvirtbench-")
	check(err)
	if !*keep {
		defer os.RemoveAll(dir)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("libvirtbench: %d MiB qcow2, %.1f%% of 4 MiB blocks rewritten; load average %s", *sizeMB, *pct, load)

	run("go", "run", "./bench/genimage", "-size-mb", fmt.Sprint(*sizeMB), "-changed-pct", fmt.Sprint(*pct), "-dir", dir)
	raw, changed := filepath.Join(dir, "disk.img"), filepath.Join(dir, "changed.img")
	disk := filepath.Join(dir, "disk.qcow2")
	run("qemu-img", "convert", "-O", "qcow2", raw, disk)

	d, err := libvirt.New(libvirt.Config{ScratchDir: filepath.Join(dir, "scratch"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	check(err)
	defer d.Close()
	name := fmt.Sprintf("csbs-bench-%d", os.Getpid())
	xmlPath := filepath.Join(dir, "dom.xml")
	check(os.WriteFile(xmlPath, []byte(fmt.Sprintf(`<domain type='kvm'><name>%s</name>
<metadata><csbs:server xmlns:csbs="urn:csbs:server:1" project_id="bench"/></metadata>
<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>`, name, disk)), 0o600))
	run("virsh", "-c", "qemu:///system", "define", xmlPath)
	defer exec.Command("virsh", "-c", "qemu:///system", "undefine", "--checkpoints-metadata", name).Run()
	run("virsh", "-c", "qemu:///system", "start", name)
	defer exec.Command("virsh", "-c", "qemu:///system", "destroy", name).Run()
	id := strings.TrimSpace(run("virsh", "-c", "qemu:///system", "domuuid", name))

	repo, err := repository.Init(filepath.Join(dir, "repo"), []byte("bench"), repository.Options{})
	check(err)
	defer repo.Close()
	srv, err := d.Server(ctx, "bench", id)
	check(err)

	full, m1, token := backup(ctx, d, repo, srv, "b1", nil, nil)
	n := rewrite(name, raw, changed, dir)
	inc, _, _ := backup(ctx, d, repo, srv, "b2", &compute.Parent{BackupID: "b1", Token: token}, m1)
	again, _, _ := backup(ctx, d, repo, srv, "b3", nil, nil)
	loc := localRead(ctx, repo, changed)
	rfull, rinc, rok := resticRun(dir, raw, changed)

	fmt.Printf("\nrewritten by the guest: %d blocks of 4 MiB (%d MiB)\n", n, n*4)
	fmt.Printf("%-34s %9s %12s %9s\n", "step", "seconds", "read MiB", "MB/s")
	for _, r := range []result{full, inc, again, loc} {
		fmt.Printf("%-34s %9.2f %12.1f %9.0f\n", r.name, r.secs, float64(r.read)/(1<<20), float64(r.size)/1e6/r.secs)
	}
	ratio := again.secs / inc.secs
	verdict := "PASS"
	if ratio < 10 {
		verdict = "MISS"
	}
	fmt.Printf("\nincremental vs full read of the same disk: %.1fx faster, %.1fx fewer bytes read (target >= 10x faster): %s\n",
		ratio, float64(again.read)/float64(max(inc.read, 1)), verdict)
	fmt.Printf("full read through QEMU (libvirt backup job, NBD) vs the local driver on the raw file: %.2fx the time\n", again.secs/loc.secs)
	if !rok {
		fmt.Println("restic is not installed (apt-get install restic): no comparison with it")
		return
	}
	fmt.Printf("restic on the raw image file: full %.2f s, incremental %.2f s\n", rfull, rinc)
	fmt.Printf("incremental through dirty bitmaps vs restic's incremental of the same data: %.1fx faster\n", rinc/inc.secs)
	fmt.Printf("first full backup through the libvirt job vs restic's full backup: %.1fx faster\n", rfull/full.secs)
}

// resticRun backs up the raw image with restic, then the changed image at
// the same path (restic's incremental reads and chunks the whole file, as
// it has no changed-block tracking). It reports false when restic is not
// installed.
func resticRun(dir, raw, changed string) (full, inc float64, ok bool) {
	if _, err := exec.LookPath("restic"); err != nil {
		return 0, 0, false
	}
	src := filepath.Join(dir, "restic-src")
	check(os.MkdirAll(src, 0o700))
	img := filepath.Join(src, "disk.img")
	env := append(os.Environ(), "RESTIC_REPOSITORY="+filepath.Join(dir, "restic"), "RESTIC_PASSWORD=bench",
		"RESTIC_CACHE_DIR="+filepath.Join(dir, "restic-cache"))
	restic := func(args ...string) float64 {
		cmd := exec.Command("restic", args...)
		cmd.Env, cmd.Dir = env, src
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Fatalf("restic %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return time.Since(start).Seconds()
	}
	restic("init", "-q")
	run("cp", "--sparse=always", raw, img)
	full = restic("backup", "-q", "disk.img")
	run("cp", "--sparse=always", changed, img)
	inc = restic("backup", "-q", "disk.img")
	return full, inc, true
}

type result struct {
	name       string
	secs       float64
	read, size int64
}

// backup does what the protect job does for every volume of srv.
func backup(ctx context.Context, d *libvirt.Driver, repo *repository.Repository, srv compute.Server, id string,
	parent *compute.Parent, parentVMs map[string]*repository.VolumeManifest) (result, map[string]*repository.VolumeManifest, string) {
	start := time.Now()
	snap, err := d.Snapshot(ctx, srv, compute.SnapshotRequest{BackupID: id, Parent: parent})
	check(err)
	defer snap.Release()
	b := repo.NewBackup()
	defer b.Abort()
	out := map[string]*repository.VolumeManifest{}
	var rs repository.Snapshot
	r := result{name: id}
	for _, sv := range snap.Volumes {
		src := source(ctx, sv)
		vm, st, err := b.VolumeFrom(ctx, src, parentVMs[sv.Volume.ID], nil)
		check(err)
		vm.VolumeID = sv.Volume.ID
		rs.Volumes = append(rs.Volumes, *vm)
		out[sv.Volume.ID] = vm
		r.read += st.ReadBytes
		r.size += st.Size
	}
	_, err = b.Commit(ctx, &rs)
	check(err)
	r.secs = time.Since(start).Seconds()
	switch {
	case parent != nil:
		r.name = "incremental (dirty bitmap)"
	case id == "b1":
		r.name = "full (first backup)"
	default:
		r.name = "full read of the same disk"
	}
	return r, out, snap.Token
}

func source(ctx context.Context, sv compute.SnapshotVolume) repository.Source {
	alloc, err := sv.Reader.Allocated(ctx)
	check(err)
	ch, err := sv.Reader.Changed(ctx)
	check(err)
	src := repository.Source{Name: sv.Volume.Name, Data: sv.Reader, Size: sv.Size, ChangesKnown: ch.Known}
	for _, e := range alloc {
		src.Allocated = append(src.Allocated, repository.Range{Off: e.Off, Len: e.Len})
	}
	for _, e := range ch.Extents {
		src.Changed = append(src.Changed, repository.Range{Off: e.Off, Len: e.Len})
	}
	return src
}

// rewrite makes the guest write the blocks in which changed.img differs
// from disk.img (through the QEMU monitor's qemu-io) and returns how many.
func rewrite(name, raw, changed, dir string) int {
	a, err := os.Open(raw)
	check(err)
	defer a.Close()
	b, err := os.Open(changed)
	check(err)
	defer b.Close()
	fi, err := a.Stat()
	check(err)
	ba, bb := make([]byte, block), make([]byte, block)
	n := 0
	for off := int64(0); off < fi.Size(); off += block {
		ka, _ := a.ReadAt(ba, off)
		kb, _ := b.ReadAt(bb, off)
		if bytes.Equal(ba[:ka], bb[:kb]) {
			continue
		}
		p := filepath.Join(dir, fmt.Sprintf("block-%d", off/block))
		check(os.WriteFile(p, bb[:kb], 0o600))
		run("virsh", "-c", "qemu:///system", "qemu-monitor-command", name, "--hmp",
			fmt.Sprintf(`qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -s %s %d %d"`, p, off, kb))
		os.Remove(p)
		n++
	}
	return n
}

// localRead backs up the raw image file through the local driver's reader.
func localRead(ctx context.Context, repo *repository.Repository, path string) result {
	dir := filepath.Dir(path)
	inv := filepath.Join(dir, "servers.yaml")
	check(local.WriteInventory(inv, local.Inventory{Servers: []local.ServerSpec{{ID: "00000000-0000-0000-0000-000000000001", Name: "raw", ProjectID: "bench",
		Volumes: []local.VolumeSpec{{ID: "v", Name: "raw", Path: path}}}}}))
	ld, err := local.New(inv)
	check(err)
	srv, err := ld.Server(ctx, "bench", "00000000-0000-0000-0000-000000000001")
	check(err)
	start := time.Now()
	snap, err := ld.Snapshot(ctx, srv, compute.SnapshotRequest{BackupID: "l1"})
	check(err)
	defer snap.Release()
	b := repo.NewBackup()
	defer b.Abort()
	r := result{name: "local driver, raw file (full read)"}
	var rs repository.Snapshot
	for _, sv := range snap.Volumes {
		vm, st, err := b.VolumeFrom(ctx, source(ctx, sv), nil, nil)
		check(err)
		vm.VolumeID = "v"
		rs.Volumes = append(rs.Volumes, *vm)
		r.read += st.ReadBytes
		r.size += st.Size
	}
	_, err = b.Commit(ctx, &rs)
	check(err)
	r.secs = time.Since(start).Seconds()
	return r
}

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		log.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
