package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csbs/csbs/internal/compute/local"
	"github.com/csbs/csbs/internal/repository/blob/s3/s3test"
)

// needTools skips (or, with CSBS_REQUIRE_FUSE=1, fails) unless the test
// runs as root with FUSE, loop devices and the named tools.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CSBS_REQUIRE_FUSE") == "1" {
			t.Fatalf("missing %v and CSBS_REQUIRE_FUSE=1 (scripts/test.sh installs fdisk and qemu-utils)", missing)
		}
		t.Skipf("missing %v", missing)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeFiles fills dir with files of the given contents and returns their
// SHA-256 by name.
func writeFiles(t *testing.T, dir string, files map[string]string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(content))
		sums[name] = hex.EncodeToString(s[:])
	}
	return sums
}

// fsImage writes a 64 MiB disk image with a partition table (one Linux
// partition from 1 MiB) holding an ext4 file system made from the files
// of dir (mkfs.ext4 -d: no mount needed).
func fsImage(t *testing.T, img, dir string) {
	t.Helper()
	os.Remove(img)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	sf := exec.Command("sfdisk", "--quiet", img)
	sf.Stdin = strings.NewReader("label: dos\nstart=2048, type=83\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-E", "offset=1048576", "-d", dir, img, "60M")
}

// partitionOffset reads the first partition's start from the table, as a
// user would (sfdisk --json), in bytes.
func partitionOffset(t *testing.T, img string) int64 {
	t.Helper()
	var pt struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Start int64 `json:"start"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", img)), &pt); err != nil || len(pt.PartitionTable.Partitions) == 0 {
		t.Fatalf("partition table of %s: %v", img, err)
	}
	ss := pt.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	return pt.PartitionTable.Partitions[0].Start * ss
}

// checkFiles loop-mounts the partition of the disk image read-only at the
// offset of its table and compares every file's hash with want.
func checkFiles(t *testing.T, img string, want map[string]string) {
	t.Helper()
	mnt := t.TempDir()
	run(t, "mount", "-t", "ext4", "-o", fmt.Sprintf("ro,loop,noload,offset=%d", partitionOffset(t, img)), img, mnt)
	defer run(t, "umount", mnt)
	got := map[string]string{}
	filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, "lost+found") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s through the mount: %v", p, err)
			return nil
		}
		s := sha256.Sum256(b)
		rel, _ := filepath.Rel(mnt, p)
		got[rel] = hex.EncodeToString(s[:])
		return nil
	})
	if len(got) != len(want) {
		t.Errorf("%s holds %d files, want %d: %v", img, len(got), len(want), got)
	}
	for name, sum := range want {
		if got[name] != sum {
			t.Errorf("%s: %s differs from the file at backup time", img, name)
		}
	}
}

// background starts a csbs command and returns it with a function that
// stops it (SIGTERM) and waits.
func background(t *testing.T, args ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	return backgroundEnv(t, nil, args...)
}

// backgroundEnv is background with the environment env (nil: this
// process's).
func backgroundEnv(t *testing.T, env []string, args ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	var log strings.Builder
	pr, pw, _ := os.Pipe()
	cmd.Stderr, cmd.Stdout = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
		}
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		<-done
		if t.Failed() {
			t.Logf("csbs %s:\n%s", args[0], log.String())
		}
	})
	return cmd, &log
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMountAndExport backs up a disk with a partition table and an ext4
// file system, changes its files and backs it up again; then mounts both
// backups (csbs mount --server), loop-mounts each partition read-only and
// compares every file with what was there at that time; and serves the
// first backup over NBD (csbs export), which qemu-img compares with the
// disk as it was.
func TestMountAndExport(t *testing.T) {
	needTools(t, "sfdisk", "mkfs.ext4", "qemu-img")
	e := newEnv(t)
	img := filepath.Join(e.dir, "fs.img")
	dir1, dir2 := t.TempDir(), t.TempDir()
	want1 := writeFiles(t, dir1, map[string]string{"etc/hostname": "web-1\n", "var/log/app.log": strings.Repeat("started\n", 50000), "data.bin": strings.Repeat("\x01\x02", 300000)})
	want2 := writeFiles(t, dir2, map[string]string{"etc/hostname": "web-1\n", "var/log/app.log": strings.Repeat("started\nstopped\n", 60000), "new.txt": "created after the first backup\n"})
	fsImage(t, img, dir1)
	e.inv.Servers = append(e.inv.Servers, local.ServerSpec{ID: serverID, Name: "web-1", ProjectID: project, Status: "ACTIVE",
		Volumes: []local.VolumeSpec{{ID: "vol-sys", Name: "web-1-sys", Path: img, Bootable: true}}})
	e.writeInventory()
	e.start()

	first := filepath.Join(t.TempDir(), "first.img")
	run(t, "cp", "--sparse=always", img, first)
	_, id1 := e.protect(project, serverID, nil)
	e.waitStatus(project, id1, 60*time.Second, "available")
	fsImage(t, img, dir2)
	_, id2 := e.protect(project, serverID, nil)
	e.waitStatus(project, id2, 60*time.Second, "available")

	// Both backups mounted, one directory each.
	mnt := t.TempDir()
	background(t, "mount", "--data-dir", e.dataDir, "--server", serverID, mnt)
	var dirs []string
	waitFor(t, "the mount shows two backups", func() bool {
		ents, _ := os.ReadDir(mnt)
		dirs = dirs[:0]
		for _, d := range ents {
			dirs = append(dirs, d.Name())
		}
		return len(dirs) == 2
	})
	for id, want := range map[string]map[string]string{id1: want1, id2: want2} {
		var dir string
		for _, d := range dirs {
			if strings.HasSuffix(d, "_"+id) {
				dir = d
			}
		}
		if dir == "" {
			t.Fatalf("no directory of backup %s among %v", id, dirs)
		}
		disk := filepath.Join(mnt, dir, "web-1-sys.img")
		if fi, err := os.Stat(disk); err != nil || fi.Size() != 64<<20 {
			t.Fatalf("%s: %v, %v", disk, fi, err)
		}
		checkFiles(t, disk, want)
	}

	// The first backup's disk over NBD equals the disk as it was.
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	background(t, "export", "--data-dir", e.dataDir, "--backup", id1, "--volume", "vol-sys", "--listen", "unix:"+sock)
	waitFor(t, "the export listens", func() bool { _, err := os.Stat(sock); return err == nil })
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", first, "nbd+unix:///?socket="+sock)

	// The same through the API (the CLI's connection settings instead of
	// the repository): the second backup mounted, the first exported.
	rmnt := t.TempDir()
	background(t, "mount", "--endpoint", e.base, "--project-id", project, "--backup", id2, rmnt)
	waitFor(t, "the mount through the API", func() bool { _, err := os.Stat(filepath.Join(rmnt, "web-1-sys.img")); return err == nil })
	checkFiles(t, filepath.Join(rmnt, "web-1-sys.img"), want2)
	rsock := filepath.Join(t.TempDir(), "nbd.sock")
	background(t, "export", "--endpoint", e.base, "--project-id", project, "--backup", id1, "--volume", "vol-sys", "--listen", "unix:"+rsock)
	waitFor(t, "the export through the API listens", func() bool { _, err := os.Stat(rsock); return err == nil })
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", first, "nbd+unix:///?socket="+rsock)
	// Another project sees nothing of it.
	if out, err := exec.Command(binary, "mount", "--endpoint", e.base, "--project-id", "0c2a2ef0d1b34ad4a6c1e01fd0ae2a3c",
		"--backup", id2, t.TempDir()).CombinedOutput(); err == nil || !strings.Contains(string(out), "CSBS.3001") {
		t.Errorf("mount of another project's backup: %v\n%s", err, out)
	}
	// Range requests of the API itself.
	req := e.do("GET", "/v1/"+project+"/checkpoint_items/"+id1+"/volumes/vol-nope/data", nil)
	if req.status != 404 || !strings.Contains(string(req.body), "vol-nope") {
		t.Errorf("data of a disk the backup does not have: %d %s", req.status, req.body)
	}

	// The first backup is deleted while it is mounted: reads go on (the
	// mount holds a lease, so garbage collection keeps the data) and give
	// the same bytes.
	var mounted1 string
	for _, d := range dirs {
		if strings.HasSuffix(d, "_"+id1) {
			mounted1 = d
		}
	}
	cp1 := e.item(project, id1)["checkpoint_id"].(string)
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp1, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.waitStatus(project, id1, 30*time.Second, "gone")
	if fileHash(t, filepath.Join(mnt, mounted1, "web-1-sys.img")) != fileHash(t, first) {
		t.Errorf("the mounted disk of a backup deleted meanwhile reads differently")
	}

	// Refusals name what is wrong.
	for _, args := range [][]string{
		{"export", "--data-dir", e.dataDir, "--backup", id1, "--volume", "vol-nope", "--listen", "unix:" + sock + "2"},
		{"export", "--data-dir", e.dataDir, "--backup", id1, "--volume", "vol-sys", "--listen", "0.0.0.0:10809"},
		{"mount", "--data-dir", e.dataDir, "--backup", newUUID(), t.TempDir()},
	} {
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "vol-nope") && !strings.Contains(string(out), "loopback") && !strings.Contains(string(out), "no backup") {
			t.Errorf("csbs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestPasswordFromEnvironment: with CSBS_REPOSITORY_PASSWORD the repository
// is created and opened with that password and no password file is
// written; without it (and without a file) csbs refuses to start, naming
// the missing password file; csbs repo takes the variable too.
func TestPasswordFromEnvironment(t *testing.T) {
	e := newEnv(t)
	e.addServer(serverID, project, "ACTIVE", 4*mib)
	e.environ = []string{"CSBS_REPOSITORY_PASSWORD=kept-in-a-vault-" + randomHex(8)}
	e.start()
	_, id := e.protect(project, serverID, nil)
	e.waitStatus(project, id, 60*time.Second, "available")
	if _, err := os.Stat(filepath.Join(e.dataDir, "repository.key")); !os.IsNotExist(err) {
		t.Fatalf("a password file was written although the password came from the environment: %v", err)
	}
	cmd := exec.Command(binary, "repo", "ls", "--data-dir", e.dataDir)
	cmd.Env = append(os.Environ(), e.environ...)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), id) {
		t.Errorf("csbs repo ls with the password in the environment: %v\n%s", err, out)
	}
	e.stop(syscall.SIGTERM)

	out, err := exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", e.dataDir, "--compute-inventory", e.invPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "password file") {
		t.Errorf("serve without the password: %v\n%s", err, out)
	}
}

// packFiles returns the names of the repository's pack files.
func packFiles(t *testing.T, e *env) map[string]bool {
	t.Helper()
	packs := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(e.dataDir, "repository", "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			packs[d.Name()] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return packs
}

// repoGC runs csbs repo gc with the margin of the test service (1.5 s: it
// marks and removes in one run), again while the service's own GC runs.
func repoGC(t *testing.T, e *env) string {
	t.Helper()
	for range 100 {
		cmd := exec.Command(binary, "repo", "gc", "--data-dir", e.dataDir)
		cmd.Env = append(os.Environ(), "CSBS_REPOSITORY_GC_MARGIN=1500ms")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return string(out)
		}
		if !strings.Contains(string(out), "another garbage collection") {
			t.Fatalf("csbs repo gc: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("csbs repo gc: another garbage collection ran all along")
	return ""
}

// TestMountHoldsGC: a backup is mounted (csbs mount, reading the
// repository directly) and deleted; garbage collection then really runs
// with its margin passed (the service's after the delete, and csbs repo gc
// with a margin of 1.5 s, which marks and removes in one run): it finds
// the backup's packs unreferenced but removes none while the mount's lease
// holds them, and the mount reads the same bytes. Once the mount ends, GC
// removes every pack.
func TestMountHoldsGC(t *testing.T) {
	needTools(t)
	e := newEnv(t)
	paths := e.addServer(serverID, project, "ACTIVE", 24*mib)
	e.start()
	_, id := e.protect(project, serverID, nil)
	e.waitStatus(project, id, 60*time.Second, "available")
	packs := packFiles(t, e)
	if len(packs) == 0 {
		t.Fatal("the backup wrote no pack")
	}
	// The packs are older than the margin when the mount begins: only its
	// lease can keep GC from removing them.
	time.Sleep(2 * time.Second)

	mnt := t.TempDir()
	mount, _ := background(t, "mount", "--data-dir", e.dataDir, "--backup", id, mnt)
	disk := filepath.Join(mnt, "srv-"+serverID[:4]+"-disk0.img")
	waitFor(t, "the mount shows the disk", func() bool { _, err := os.Stat(disk); return err == nil })

	cp := e.item(project, id)["checkpoint_id"].(string)
	if r := e.do("DELETE", "/v1/"+project+"/providers/"+provider+"/checkpoints/"+cp, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.waitStatus(project, id, 30*time.Second, "gone")
	// Whatever GC marks from now on (the service's, kicked by the delete,
	// or this one's) is older than the margin when this one looks, or
	// waited for by it: only the mount's lease keeps the packs.
	time.Sleep(2 * time.Second)
	out := repoGC(t, e)
	if !strings.Contains(out, "removed 0 packs") || !strings.Contains(out, "packs wait") {
		t.Errorf("GC while the deleted backup is mounted: %s; want nothing removed and the packs waiting", out)
	}
	if got := packFiles(t, e); len(got) != len(packs) {
		t.Errorf("GC removed %d of the %d packs of a backup that is mounted", len(packs)-len(got), len(packs))
	}
	if fileHash(t, disk) != fileHash(t, paths[0]) {
		t.Error("the mounted disk of a backup deleted and collected meanwhile reads differently")
	}

	mount.Process.Signal(syscall.SIGTERM)
	mount.Wait()
	// GC frees them within a few margins: csbs repo gc, or the service's
	// own GC, whichever comes first (a pack marked by one waits the
	// margin before the other removes it).
	for range 5 {
		if len(packFiles(t, e)) == 0 {
			break
		}
		out = repoGC(t, e)
		time.Sleep(1600 * time.Millisecond)
	}
	if got := packFiles(t, e); len(got) != 0 {
		t.Errorf("after the mount ended GC left %d of the %d packs of the deleted backup (%s)", len(got), len(packs), out)
	}
}

// TestMountAndExportOnObjectStorage: csbs mount and csbs export read a
// backup straight from a repository in an S3 bucket (versitygw) with
// nothing but its URL, endpoint, credentials and password file, like csbs
// repo; the disk reads back exactly as it was at the backup.
func TestMountAndExportOnObjectStorage(t *testing.T) {
	needTools(t, "qemu-img")
	srv := s3test.Start(t)
	e, bucket := newS3Env(t, srv)
	img := filepath.Join(e.dir, "sys.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fillRandom(t, img, 24<<20)
	e.inv.Servers = append(e.inv.Servers, local.ServerSpec{ID: serverID, Name: "web-1", ProjectID: project, Status: "ACTIVE",
		Volumes: []local.VolumeSpec{{ID: "vol-sys", Name: "web-1-sys", Path: img, Bootable: true}}})
	e.writeInventory()
	e.start()
	_, id := e.protect(project, serverID, nil)
	e.waitStatus(project, id, 60*time.Second, "available")
	want := fileHash(t, img)
	fillRandom(t, img, 24<<20) // the disk moves on; the backup must not

	repoArgs := []string{"--repository-url", "s3://" + bucket + "/csbs/site-a",
		"--password-file", filepath.Join(e.dataDir, "repository.key")}
	env := append(os.Environ(), "CSBS_REPOSITORY_S3_ENDPOINT="+srv.Endpoint, "CSBS_REPOSITORY_S3_REGION="+s3test.Region,
		"AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey)

	mnt := t.TempDir()
	backgroundEnv(t, env, append([]string{"mount", "--backup", id, mnt}, repoArgs...)...)
	disk := filepath.Join(mnt, "web-1-sys.img")
	waitFor(t, "the mount on S3", func() bool { _, err := os.Stat(disk); return err == nil })
	if got := fileHash(t, disk); got != want {
		t.Errorf("the disk mounted from the bucket differs from the disk at the backup")
	}

	sock := filepath.Join(t.TempDir(), "nbd.sock")
	backgroundEnv(t, env, append([]string{"export", "--backup", id, "--volume", "vol-sys", "--listen", "unix:" + sock}, repoArgs...)...)
	waitFor(t, "the export on S3 listens", func() bool { _, err := os.Stat(sock); return err == nil })
	out := filepath.Join(t.TempDir(), "exported.img")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd+unix:///?socket="+sock, out)
	if got := fileHash(t, out); got != want {
		t.Errorf("the disk exported from the bucket differs from the disk at the backup")
	}
}
