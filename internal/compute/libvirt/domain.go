package libvirt

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"
	"libvirt.org/go/libvirtxml"

	"github.com/csbs/csbs/internal/compute"
)

// MetadataNS is the namespace of the element in a domain's <metadata> that
// names its project: <csbs:server xmlns:csbs="urn:csbs:server:1"
// project_id="…"/>.
const MetadataNS = "urn:csbs:server:1"

// disk is one disk of a domain as the driver needs it.
type disk struct {
	vol    compute.Volume
	target string // the guest's device name (vda): libvirt's name of the disk
	format string // qcow2, raw, …
	file   string // the source file or block device
}

// bitmaps reports whether the disk can hold a persistent dirty bitmap:
// only qcow2 images can.
func (d disk) bitmaps() bool { return d.format == "qcow2" }

// domain is a parsed domain definition.
type domain struct {
	id, name, project string
	vcpus, ramMB      int
	disks             []disk
}

// VolumeID is the id of the disk with target dev (vda) of the domain with
// UUID domainID: a name-based UUID (version 5) in the domain's UUID as
// namespace. It is stable as long as the disk keeps its target name,
// whatever file it points to, and distinct across domains.
func VolumeID(domainID, target string) string {
	ns, err := uuid.Parse(domainID)
	if err != nil {
		ns = uuid.NameSpaceOID
	}
	return uuid.NewSHA1(ns, []byte("disk/"+target)).String()
}

// parseDomain reads a domain's XML: its project from the csbs metadata
// (defaultProject when there is none), its disks (device "disk" with a file
// or block source; CD-ROMs and network disks are not volumes). Sizes are
// left for the caller (they need libvirt).
func parseDomain(doc, defaultProject string) (domain, error) {
	var x libvirtxml.Domain
	if err := x.Unmarshal(doc); err != nil {
		return domain{}, fmt.Errorf("domain XML: %w", err)
	}
	d := domain{name: x.Name, project: defaultProject}
	u, err := uuid.Parse(x.UUID)
	if err != nil {
		return domain{}, fmt.Errorf("domain %s: uuid %q: %w", x.Name, x.UUID, err)
	}
	d.id = u.String()
	if x.Metadata != nil {
		if p, ok, err := metadataProject(x.Metadata.XML); err != nil {
			return domain{}, fmt.Errorf("domain %s: metadata: %w", x.Name, err)
		} else if ok {
			d.project = p
		}
	}
	if x.VCPU != nil {
		d.vcpus = int(x.VCPU.Value)
		if x.VCPU.Current > 0 {
			d.vcpus = int(x.VCPU.Current)
		}
	}
	if x.Memory != nil {
		d.ramMB = int(memBytes(x.Memory.Value, x.Memory.Unit) >> 20)
	}
	bootFirstDisk := x.OS == nil || len(x.OS.BootDevices) == 0
	if x.OS != nil {
		for _, b := range x.OS.BootDevices {
			bootFirstDisk = bootFirstDisk || b.Dev == "hd"
		}
	}
	explicitBoot := false
	if x.Devices != nil {
		for _, dd := range x.Devices.Disks {
			if (dd.Device != "" && dd.Device != "disk") || dd.Target == nil || dd.Source == nil {
				continue
			}
			k := disk{target: dd.Target.Dev, format: "raw"}
			switch {
			case dd.Source.File != nil:
				k.file = dd.Source.File.File
			case dd.Source.Block != nil:
				k.file = dd.Source.Block.Dev
			default:
				continue
			}
			if dd.Driver != nil && dd.Driver.Type != "" {
				k.format = dd.Driver.Type
			}
			k.vol = compute.Volume{
				ID: VolumeID(d.id, k.target), Name: d.name + "-" + k.target, Path: k.file,
				Shareable: dd.Shareable != nil,
			}
			if dd.Boot != nil && dd.Boot.Order == 1 {
				k.vol.Bootable, explicitBoot = true, true
			}
			d.disks = append(d.disks, k)
		}
	}
	// Without a per-device boot order, the first disk boots when the
	// domain boots from disks at all.
	if !explicitBoot && bootFirstDisk && len(d.disks) > 0 {
		d.disks[0].vol.Bootable = true
	}
	return d, nil
}

// metadataProject finds <server xmlns="urn:csbs:server:1" project_id="…"/>
// among the elements of a domain's <metadata>.
func metadataProject(inner string) (string, bool, error) {
	dec := xml.NewDecoder(strings.NewReader(inner))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Space != MetadataNS || se.Name.Local != "server" {
			continue
		}
		for _, a := range se.Attr {
			if a.Name.Local == "project_id" && a.Value != "" {
				return a.Value, true, nil
			}
		}
		return "", false, nil
	}
}

// memBytes converts a libvirt memory value (default KiB) to bytes.
func memBytes(v uint, unit string) int64 {
	n := int64(v)
	switch strings.ToLower(unit) {
	case "b", "bytes":
		return n
	case "", "k", "kib":
		return n << 10
	case "kb":
		return n * 1000
	case "m", "mib":
		return n << 20
	case "mb":
		return n * 1000 * 1000
	case "g", "gib":
		return n << 30
	case "gb":
		return n * 1000 * 1000 * 1000
	case "t", "tib":
		return n << 40
	}
	return n << 10
}
