package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needLibvirt skips without a usable libvirtd and KVM, or fails when
// CSBS_REQUIRE_LIBVIRT is set (scripts/test.sh as root).
func needLibvirt(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/kvm"); err != nil {
		why = "no KVM: " + err.Error()
	} else if out, err := exec.Command("virsh", "-c", "qemu:///system", "version").CombinedOutput(); err != nil {
		why = fmt.Sprintf("libvirt is not reachable: %v %s", err, strings.TrimSpace(string(out)))
	}
	if why == "" {
		return
	}
	if os.Getenv("CSBS_REQUIRE_LIBVIRT") != "" {
		t.Fatal(why + " (CSBS_REQUIRE_LIBVIRT is set)")
	}
	t.Skip(why + "; scripts/test.sh as root installs and starts libvirt")
}

func virsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runVirsh(args...)
	if err != nil {
		t.Fatalf("virsh %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func runVirsh(args ...string) ([]byte, error) {
	return exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
}

// startDomain starts a domain with virsh, again up to twice a second apart
// when QEMU exits at once: right after a destroy, the killed QEMU may not
// be gone yet (seen once: "process exited while connecting to monitor",
// nothing in QEMU's log). The tests assert what csbs does, not this.
func startDomain(t *testing.T, name string) {
	t.Helper()
	var out []byte
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Second)
		}
		out, err = runVirsh("start", name)
		if err == nil {
			return
		}
	}
	t.Fatalf("virsh start %s: %v\n%s", name, err, out)
}

// TestLibvirtBackupRestore drives the binary with compute.driver libvirt on
// a running KVM domain (a qcow2 and a raw disk, no guest OS; writes through
// the QEMU monitor): a full backup, an incremental that reads only the
// written clusters of the qcow2 disk and says why it read the raw one
// whole, a restore of the incremental with power on (qemu-img compare
// against the bytes backed up), and the full read after the restore.
func TestLibvirtBackupRestore(t *testing.T) {
	needLibvirt(t)
	t.Parallel()
	dir := t.TempDir()
	name := "csbs-e2e-" + randomHex(6)
	sys, data := filepath.Join(dir, "sys.qcow2"), filepath.Join(dir, "data.raw")
	for _, c := range [][]string{{"create", "-q", "-f", "qcow2", sys, "32M"}, {"create", "-q", "-f", "raw", data, "16M"}} {
		if out, err := exec.Command("qemu-img", c...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v %s", c, err, out)
		}
	}
	defineDomain(t, dir, name, sys, data)
	startDomain(t, name)
	id := virsh(t, "domuuid", name)
	write := func(disk int, cmd string) {
		t.Helper()
		virsh(t, "qemu-monitor-command", name, "--hmp", fmt.Sprintf(`qemu-io -d /machine/peripheral/virtio-disk%d/virtio-backend "%s"`, disk, cmd))
	}
	write(0, "write -P 0x11 0 2M")
	write(1, "write -P 0x22 1M 64k")

	e := newEnv(t, "--compute-driver", "libvirt", "--compute-libvirt-scratch-dir", filepath.Join(dir, "scratch"),
		"--compute-libvirt-shutdown-timeout", "1s")
	e.start()
	_, full := e.protect(project, id, nil)
	it := e.waitStatus(project, full, time.Minute, "available", "error")
	if it["status"] != "available" {
		t.Fatalf("full backup: %v", it["extend_info"])
	}
	ext := it["extend_info"].(map[string]any)
	if ext["snapshot_method"] != "libvirt-backup" || ext["crash_consistent"] != true {
		t.Errorf("full backup: method %v, crash consistent %v", ext["snapshot_method"], ext["crash_consistent"])
	}

	write(0, "write -P 0xab 9M 64k")
	write(1, "write -P 0xcd 3M 4k")
	_, inc := e.protect(project, id, nil)
	it = e.waitStatus(project, inc, time.Minute, "available", "error")
	if it["status"] != "available" {
		t.Fatalf("incremental backup: %v", it["extend_info"])
	}
	vols := map[string]map[string]any{}
	for _, v := range it["extend_info"].(map[string]any)["volume_backups"].([]any) {
		vb := v.(map[string]any)
		vols[strings.TrimPrefix(vb["source_volume_name"].(string), name+"-")] = vb
	}
	// Chunks are 1 MiB by default: the one written cluster costs one chunk.
	if vda := vols["vda"]; vda["read_bytes"] != float64(1<<20) || !strings.HasPrefix(vda["read_reason"].(string), "changed extents only") {
		t.Errorf("qcow2 disk of the incremental: read %v bytes (%v); want one 1 MiB chunk, changed extents only", vda["read_bytes"], vda["read_reason"])
	}
	if vdb := vols["vdb"]; !strings.Contains(vdb["read_reason"].(string), "raw disk") {
		t.Errorf("raw disk of the incremental: %v; want a full read because raw", vdb["read_reason"])
	}
	// What the incremental holds, as the guest saw it.
	want := filepath.Join(dir, "want.raw")
	virsh(t, "destroy", name)
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", sys, want).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v %s", err, out)
	}
	wantData, _ := os.ReadFile(data)
	startDomain(t, name)
	write(0, "write -P 0xee 0 12M")
	write(1, "write -P 0xee 0 12M")

	rid := e.startRestore(project, e.restoreBody("", inc, id, true))
	if r := e.waitRestore(project, rid, 2*time.Minute); r["status"] != "success" {
		t.Fatalf("restore: %v", r)
	}
	if st := virsh(t, "domstate", name); st != "running" {
		t.Errorf("after a restore with power_on the domain is %q", st)
	}
	virsh(t, "destroy", name)
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", sys, want).CombinedOutput(); err != nil {
		t.Errorf("restored qcow2 disk differs from the backup: %v %s", err, out)
	}
	if got, _ := os.ReadFile(data); string(got) != string(wantData) {
		t.Error("restored raw disk differs from the backup")
	}
	startDomain(t, name)
	_, after := e.protect(project, id, nil)
	it = e.waitStatus(project, after, time.Minute, "available", "error")
	for _, v := range it["extend_info"].(map[string]any)["volume_backups"].([]any) {
		vb := v.(map[string]any)
		if r := vb["read_reason"].(string); strings.HasPrefix(r, "changed extents only") {
			t.Errorf("backup after a restore of %s: %s; want a full read", vb["source_volume_name"], r)
		}
	}
}

// defineDomain defines the KVM domain name of project with two disks, the
// qcow2 image sys (vda) and the raw image data (vdb), its XML written in
// dir; it is destroyed and undefined at the end of the test.
func defineDomain(t *testing.T, dir, name, sys, data string) {
	t.Helper()
	xmlPath := filepath.Join(dir, "dom.xml")
	os.WriteFile(xmlPath, []byte(fmt.Sprintf(`<domain type='kvm'><name>%s</name>
<metadata><csbs:server xmlns:csbs="urn:csbs:server:1" project_id="%s"/></metadata>
<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='%s'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>`, name, project, sys, data)), 0o600)
	virsh(t, "define", xmlPath)
	t.Cleanup(func() {
		exec.Command("virsh", "-c", "qemu:///system", "destroy", name).Run()
		exec.Command("virsh", "-c", "qemu:///system", "undefine", "--checkpoints-metadata", name).Run()
	})
}
