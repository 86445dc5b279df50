package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLibvirtInstantRecovery drives csbs instant-recover on a KVM domain
// (a qcow2 and a raw disk, no guest OS; writes through the QEMU monitor)
// whose disks were overwritten after a backup: refusals name what is wrong
// (an unknown backup; a running domain without --stop) and change nothing;
// with --stop and a throttled copy the domain runs from the backup while
// the copy goes on, a guest write made then is on the real disk
// afterwards, the rest of each disk equals the backup byte for byte, the
// scratch directory is empty and both definitions name the real disks.
func TestLibvirtInstantRecovery(t *testing.T) {
	needLibvirt(t)
	t.Parallel()
	dir := t.TempDir()
	name := "csbs-e2e-" + randomHex(6)
	sys, data := filepath.Join(dir, "sys.qcow2"), filepath.Join(dir, "data.raw")
	qemu := func(tool string, args ...string) {
		t.Helper()
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v %s", tool, args, err, out)
		}
	}
	qemu("qemu-img", "create", "-q", "-f", "qcow2", sys, "32M")
	qemu("qemu-img", "create", "-q", "-f", "raw", data, "16M")
	qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 2M", "-c", "write -P 0x12 9M 1M", sys)
	qemu("qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 64k", data)
	defineDomain(t, dir, name, sys, data)
	id := virsh(t, "domuuid", name)
	wantSys, wantData := filepath.Join(dir, "want-sys.raw"), filepath.Join(dir, "want-data.raw")
	qemu("qemu-img", "convert", "-O", "raw", sys, wantSys)
	qemu("cp", data, wantData)

	scratch := filepath.Join(dir, "scratch")
	e := newEnv(t, "--compute-driver", "libvirt", "--compute-libvirt-scratch-dir", scratch, "--compute-libvirt-shutdown-timeout", "1s")
	e.start()
	_, item := e.protect(project, id, nil)
	if it := e.waitStatus(project, item, time.Minute, "available", "error"); it["status"] != "available" {
		t.Fatalf("backup: %v", it["extend_info"])
	}

	// The disks are lost, and the domain runs on the wreck.
	qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0xee 0 32M", sys)
	qemu("qemu-io", "-f", "raw", "-c", "write -P 0xee 0 16M", data)
	startDomain(t, name)
	wreck := fileHash(t, data)

	conf := filepath.Join(dir, "csbs.yaml")
	os.WriteFile(conf, []byte("compute:\n  libvirt:\n    scratch_dir: "+scratch+"\n    shutdown_timeout: 1s\n"), 0o600)
	recoverArgs := func(more ...string) []string {
		return append([]string{"instant-recover", "--config", conf, "--data-dir", e.dataDir}, more...)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--backup", "4b1f0c1e-0000-4000-8000-000000000000"}, []string{"no backup 4b1f0c1e-0000-4000-8000-000000000000"}},
		{[]string{"--backup", item}, []string{name, "ACTIVE", "--stop", "nothing was changed"}},
	} {
		out, err := exec.Command(binary, recoverArgs(tc.args...)...).CombinedOutput()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(string(out), w) {
				t.Errorf("csbs instant-recover %v: %v, %s; want refused, saying %q", tc.args, err, out, w)
			}
		}
	}
	if st := virsh(t, "domstate", name); st != "running" || fileHash(t, data) != wreck {
		t.Fatalf("after refusals the domain is %q, its raw disk changed: %v", st, fileHash(t, data) != wreck)
	}

	cmd := exec.Command(binary, recoverArgs("--backup", item, "--stop", "--bandwidth", "1")...)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if t.Failed() || testing.Verbose() {
			t.Logf("csbs instant-recover:\n%s", log)
		}
	})
	waitFor(t, "the copy is under way", func() bool { return strings.Contains(log.String(), "copying: ") })
	if st := virsh(t, "domstate", name); st != "running" {
		t.Fatalf("while the copy goes on the domain is %q", st)
	}
	if src := virsh(t, "domblklist", name); !strings.Contains(src, "instant-") {
		t.Errorf("while the copy goes on the domain's disks are\n%s\nwant the overlays", src)
	}
	virsh(t, "qemu-monitor-command", name, "--hmp", `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x55 20M 4k"`)
	virsh(t, "blockjob", name, "vda", "--bandwidth", "0")
	virsh(t, "blockjob", name, "vdb", "--bandwidth", "0")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("csbs instant-recover: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("csbs instant-recover did not finish in 2 minutes")
	}
	if !strings.Contains(log.String(), "done: domain "+name+" runs on its own disks") {
		t.Errorf("csbs instant-recover did not say it is done:\n%s", log)
	}
	if st := virsh(t, "domstate", name); st != "running" {
		t.Errorf("after instant recovery the domain is %q", st)
	}
	for _, x := range []string{virsh(t, "domblklist", name), virsh(t, "domblklist", "--inactive", name)} {
		if !strings.Contains(x, sys) || !strings.Contains(x, data) || strings.Contains(x, "instant-") {
			t.Errorf("after instant recovery the domain's disks are\n%s", x)
		}
	}
	if ents, err := os.ReadDir(scratch); err != nil || len(ents) != 0 {
		t.Errorf("scratch directory after instant recovery: %v, %v; want it empty", ents, err)
	}
	virsh(t, "destroy", "--graceful", name)
	qemu("qemu-io", "-f", "raw", "-c", "write -P 0x55 20M 4k", wantSys)
	qemu("qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", sys, wantSys)
	qemu("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", data, wantData)
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
