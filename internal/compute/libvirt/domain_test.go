package libvirt

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

const uuid1 = "5f1b5c3e-8a4f-4f5e-9d3a-0c6f1e2d3b4a"

func domainXML(meta, boot string, disks ...string) string {
	return `<domain type='kvm'><name>web</name><uuid>` + uuid1 + `</uuid>` + meta +
		`<memory unit='KiB'>2097152</memory><vcpu current='2'>4</vcpu><os><type>hvm</type>` + boot + `</os><devices>` +
		strings.Join(disks, "") + `</devices></domain>`
}

const (
	qcowDisk  = `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/sys.qcow2'/><target dev='vda' bus='virtio'/></disk>`
	rawDisk   = `<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg/data'/><target dev='vdb' bus='virtio'/><shareable/></disk>`
	cdrom     = `<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/></disk>`
	bootVDB   = `<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg/data'/><target dev='vdb' bus='virtio'/><boot order='1'/></disk>`
	csbsMeta  = `<metadata><csbs:server xmlns:csbs="urn:csbs:server:1" project_id="p1"/></metadata>`
	otherMeta = `<metadata><app:x xmlns:app="urn:other" project_id="nope"/></metadata>`
)

// TestParseDomain: the rules that make a domain a server: its project,
// which disks are volumes, their ids, formats and the boot disk.
func TestParseDomain(t *testing.T) {
	for _, tt := range []struct {
		name, doc, dflt string
		project         string
		targets         string // target:format:bootable:shareable, space-separated
	}{
		{"metadata project", domainXML(csbsMeta, `<boot dev='hd'/>`, qcowDisk, rawDisk), "", "p1", "vda:qcow2:true:false vdb:raw:false:true"},
		{"default project without metadata", domainXML("", "", qcowDisk), "dflt", "dflt", "vda:qcow2:true:false"},
		{"no project: invisible", domainXML(otherMeta, "", qcowDisk), "", "", "vda:qcow2:true:false"},
		{"CD-ROMs are not volumes", domainXML(csbsMeta, "", cdrom, qcowDisk), "", "p1", "vda:qcow2:true:false"},
		{"boot order wins over the first disk", domainXML(csbsMeta, "", qcowDisk, bootVDB), "", "p1", "vda:qcow2:false:false vdb:raw:true:false"},
		{"booting from the network: no boot disk", domainXML(csbsMeta, `<boot dev='network'/>`, qcowDisk), "", "p1", "vda:qcow2:false:false"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := parseDomain(tt.doc, tt.dflt)
			if err != nil {
				t.Fatal(err)
			}
			if d.project != tt.project || d.id != uuid1 || d.name != "web" || d.vcpus != 2 || d.ramMB != 2048 {
				t.Errorf("domain %+v; want project %q, 2 vCPUs, 2048 MB", d, tt.project)
			}
			var got []string
			for _, k := range d.disks {
				got = append(got, strings.Join([]string{k.target, k.format, boolString(k.vol.Bootable), boolString(k.vol.Shareable)}, ":"))
				if k.vol.ID != VolumeID(uuid1, k.target) {
					t.Errorf("disk %s has id %s, want VolumeID(domain, target)", k.target, k.vol.ID)
				}
			}
			if strings.Join(got, " ") != tt.targets {
				t.Errorf("disks %q, want %q", strings.Join(got, " "), tt.targets)
			}
		})
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestVolumeID: stable for one domain and target, distinct across both.
func TestVolumeID(t *testing.T) {
	other := "0b7c6f2e-1111-4222-8333-944455556666"
	for _, tt := range []struct {
		name string
		a, b [2]string
		same bool
	}{
		{"same domain and target", [2]string{uuid1, "vda"}, [2]string{uuid1, "vda"}, true},
		{"another target", [2]string{uuid1, "vda"}, [2]string{uuid1, "vdb"}, false},
		{"another domain", [2]string{uuid1, "vda"}, [2]string{other, "vda"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := VolumeID(tt.a[0], tt.a[1]) == VolumeID(tt.b[0], tt.b[1]); got != tt.same {
				t.Errorf("VolumeID equal = %v, want %v", got, tt.same)
			}
		})
	}
	if u, err := uuid.Parse(VolumeID(uuid1, "vda")); err != nil || u.Version() != 5 {
		t.Errorf("VolumeID is not a version-5 UUID: %v, %v", u, err)
	}
}
