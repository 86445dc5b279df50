package libvirt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/csbs/csbs/internal/compute"
)

// The guest-agent test boots the smallest guest that answers fsfreeze: the
// host's Debian cloud kernel and an initramfs holding busybox, the kernel's
// virtio modules and the QEMU guest agent (with the libraries it links).
// Its init mounts the ext4 file system of vdb and runs the agent.
// scripts/test.sh installs linux-image-cloud-amd64, busybox-static and
// qemu-guest-agent.

const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console virtio_blk; do
	insmod /lib/modules/$m.ko
done
for i in $(seq 50); do [ -b /dev/vdb ] && break; sleep 0.1; done
mkdir -p /mnt /run /var/run
mount -t ext4 /dev/vdb /mnt && echo csbs-guest: mounted vdb
port=
for i in $(seq 50); do
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
	done
	[ -n "$port" ] && [ -c "$port" ] && break
	sleep 0.1
done
echo csbs-guest: agent on $port
exec /usr/sbin/qemu-ga -m virtio-serial -p $port -t /run
`

// buildGuest writes the guest's initramfs into dir and returns the kernel
// and the initramfs, or why they cannot be had here.
func buildGuest(dir string) (string, string, error) {
	kernels, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(kernels) == 0 {
		return "", "", fmt.Errorf("no Debian cloud kernel in /boot (Debian: linux-image-cloud-amd64)")
	}
	kernel := kernels[len(kernels)-1]
	version := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	for _, need := range []string{"/bin/busybox", "/usr/sbin/qemu-ga"} {
		if _, err := os.Stat(need); err != nil {
			return "", "", fmt.Errorf("%s is missing (Debian: busybox-static, qemu-guest-agent)", need)
		}
	}
	if out, err := exec.Command("file", "-L", "/bin/busybox").CombinedOutput(); err == nil && !strings.Contains(string(out), "statically linked") {
		return "", "", fmt.Errorf("/bin/busybox is not static (Debian: busybox-static)")
	}
	root := filepath.Join(dir, "root")
	copyTo := func(src, dst string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		dst = filepath.Join(root, dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o755)
	}
	files := map[string]string{"/bin/busybox": "bin/busybox", "/usr/sbin/qemu-ga": "usr/sbin/qemu-ga",
		"/lib64/ld-linux-x86-64.so.2": "lib64/ld-linux-x86-64.so.2"}
	out, err := exec.Command("ldd", "/usr/sbin/qemu-ga").Output()
	if err != nil {
		return "", "", fmt.Errorf("ldd qemu-ga: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/") {
			files[f[2]] = strings.TrimPrefix(f[2], "/")
		}
	}
	mods := filepath.Join("/lib/modules", version, "kernel/drivers")
	for _, m := range []string{"virtio/virtio", "virtio/virtio_ring", "virtio/virtio_pci_legacy_dev", "virtio/virtio_pci_modern_dev",
		"virtio/virtio_pci", "char/virtio_console", "block/virtio_blk"} {
		files[filepath.Join(mods, m+".ko")] = "lib/modules/" + filepath.Base(m) + ".ko"
	}
	for src, dst := range files {
		if err := copyTo(src, dst); err != nil {
			return "", "", fmt.Errorf("guest initramfs: %w", err)
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(guestInit), 0o755); err != nil {
		return "", "", err
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("guest initramfs: cpio: %v %s", err, out)
	}
	os.RemoveAll(root)
	return kernel, initrd, nil
}

// TestGuestAgentQuiesce: with a guest agent that answers, the backup of a
// running domain freezes the guest's file systems around the backup's
// instant (the snapshot says it is quiesced) and thaws them afterwards.
func TestGuestAgentQuiesce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t, "")
	dir := t.TempDir()
	kernel, initrd, err := buildGuest(dir)
	if err != nil {
		if os.Getenv("CSBS_REQUIRE_LIBVIRT") != "" {
			t.Fatalf("guest for the agent test: %v (CSBS_REQUIRE_LIBVIRT is set)", err)
		}
		t.Skipf("guest for the agent test: %v; scripts/test.sh as root installs what it needs", err)
	}
	sys, data, console := filepath.Join(dir, "sys.qcow2"), filepath.Join(dir, "data.raw"), filepath.Join(dir, "console.log")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", sys, "32M")
	run(t, "qemu-img", "create", "-q", "-f", "raw", data, "32M")
	run(t, "mkfs.ext4", "-q", "-F", data)
	name := fmt.Sprintf("csbs-test-agent-%d", time.Now().UnixNano()%1e9)
	// type 'qemu' (emulated CPU): this machine kind runs KVM nested, and a
	// Linux kernel hangs at its first instructions there; libvirt, the
	// backup job and the agent are the same either way.
	doc := fmt.Sprintf(`<domain type='qemu'><name>%s</name>
<metadata><csbs:server xmlns:csbs="urn:csbs:server:1" project_id="p1"/></metadata>
<memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel><initrd>%s</initrd><cmdline>console=ttyS0 panic=-1</cmdline></os>
<on_reboot>destroy</on_reboot>
<devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='%s'/><target dev='vdb' bus='virtio'/></disk>
<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
<serial type='file'><source path='%s'/><target port='0'/></serial>
</devices></domain>`, name, kernel, initrd, sys, data, console)
	l, err := d.conn()
	if err != nil {
		t.Fatal(err)
	}
	dom, err := l.DomainDefineXML(doc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := d.conn(); err == nil {
			l.DomainDestroy(dom)
			l.DomainUndefineFlags(dom, golibvirt.DomainUndefineCheckpointsMetadata)
		}
	})
	if err := l.DomainCreate(dom); err != nil {
		t.Fatal(err)
	}
	agent := func(cmd string) (string, error) {
		out, err := l.QEMUDomainAgentCommand(dom, `{"execute":"`+cmd+`"}`, 5, 0)
		if err != nil || len(out) == 0 {
			return "", err
		}
		return out[0], nil
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := agent("guest-ping"); err == nil {
			break
		} else if time.Now().After(deadline) {
			b, _ := os.ReadFile(console)
			t.Fatalf("the guest agent did not answer in 90s: %v\nguest console:\n%s", err, b)
		}
		time.Sleep(500 * time.Millisecond)
	}

	s, err := d.Server(ctx, "p1", uuidString(dom.UUID))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx, s, compute.SnapshotRequest{BackupID: "q1"})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if !snap.Quiesced || !snap.CrashConsistent {
		b, _ := os.ReadFile(console)
		t.Fatalf("backup with a guest agent: quiesced %v, crash-consistent %v; want both\nguest console:\n%s", snap.Quiesced, snap.CrashConsistent, b)
	}
	if st, err := agent("guest-fsfreeze-status"); err != nil || !strings.Contains(st, "thawed") {
		t.Errorf("the guest's file systems after the backup began: %s %v; want thawed", st, err)
	}
	// The backup reads the file system of vdb as it was frozen: a clean
	// ext4 (its superblock magic at 1080).
	for _, sv := range snap.Volumes {
		if !strings.HasSuffix(sv.Volume.Name, "vdb") && sv.Volume.ID != VolumeID(uuidString(dom.UUID), "vdb") {
			continue
		}
		magic := make([]byte, 2)
		if _, err := sv.Reader.ReadAt(magic, 1080); err != nil || magic[0] != 0x53 || magic[1] != 0xef {
			t.Errorf("vdb read through the backup has no ext4 superblock: %x %v", magic, err)
		}
	}
}
