package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/csbs/csbs/internal/compute"
)

// Inventory is the content of an inventory file: the servers the local
// driver knows. The YAML layout is a contract (see DESIGN.md, "Compute
// driver").
type Inventory struct {
	Servers []ServerSpec `yaml:"servers"`
}

// ServerSpec is one server of an inventory file.
type ServerSpec struct {
	ID               string       `yaml:"id"`
	Name             string       `yaml:"name,omitempty"`
	ProjectID        string       `yaml:"project_id"`
	AvailabilityZone string       `yaml:"availability_zone,omitempty"`
	Status           string       `yaml:"status,omitempty"`
	VCPUs            int          `yaml:"vcpus,omitempty"`
	RAM              int          `yaml:"ram,omitempty"` // MB
	PrivateIP        string       `yaml:"private_ip,omitempty"`
	StopCommand      []string     `yaml:"stop_command,omitempty"`
	StartCommand     []string     `yaml:"start_command,omitempty"`
	Volumes          []VolumeSpec `yaml:"volumes"`
}

// VolumeSpec is one disk of a server in an inventory file.
type VolumeSpec struct {
	ID        string `yaml:"id"`
	Name      string `yaml:"name,omitempty"`
	Path      string `yaml:"path"` // regular file or block device
	Bootable  bool   `yaml:"bootable,omitempty"`
	Shareable bool   `yaml:"shareable,omitempty"`
}

// DefaultAZ is the availability zone of a server whose inventory entry names none.
const DefaultAZ = "az1"

// DefaultStatus is the status of a server whose inventory entry names none.
const DefaultStatus = "ACTIVE"

// ParseInventory decodes and validates an inventory. Unknown keys are
// errors, so a misspelt key is reported instead of silently ignored.
// Relative volume paths are resolved against dir (the directory of the
// inventory file); dir "" leaves them as they are.
func ParseInventory(data []byte, dir string) ([]compute.Server, error) {
	var inv Inventory
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&inv); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode YAML: %w", err)
	}
	return inv.servers(dir)
}

// servers validates inv and converts it, with defaults applied.
func (inv Inventory) servers(dir string) ([]compute.Server, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	byID := make(map[string]int)         // server id -> index
	volPath := make(map[string]string)   // volume id -> path, across servers
	volServer := make(map[string]string) // volume id -> first server that has it
	out := make([]compute.Server, 0, len(inv.Servers))
	for i, ss := range inv.Servers {
		where := serverRef(i, ss)
		id := strings.TrimSpace(ss.ID)
		if id == "" {
			fail("%s: id is missing; give every server a unique id (a UUID)", where)
		} else if j, dup := byID[id]; dup {
			fail("%s: id %q is already used by servers[%d]; server ids must be unique", where, id, j)
		} else {
			byID[id] = i
		}
		if strings.TrimSpace(ss.ProjectID) == "" {
			fail("%s: project_id is missing", where)
		}
		if ss.VCPUs < 0 {
			fail("%s: vcpus is negative", where)
		}
		if ss.RAM < 0 {
			fail("%s: ram is negative", where)
		}
		s := compute.Server{
			ID:           id,
			Name:         ss.Name,
			ProjectID:    strings.TrimSpace(ss.ProjectID),
			AZ:           ss.AvailabilityZone,
			Status:       strings.ToUpper(strings.TrimSpace(ss.Status)),
			VCPUs:        ss.VCPUs,
			RAM:          ss.RAM,
			PrivateIP:    ss.PrivateIP,
			StopCommand:  clone(ss.StopCommand),
			StartCommand: clone(ss.StartCommand),
		}
		if s.AZ == "" {
			s.AZ = DefaultAZ
		}
		if s.Status == "" {
			s.Status = DefaultStatus
		}
		seen := make(map[string]bool)
		for k, vs := range ss.Volumes {
			vwhere := fmt.Sprintf("%s: volumes[%d]", where, k)
			if vs.Name != "" {
				vwhere += " (" + vs.Name + ")"
			}
			vid := strings.TrimSpace(vs.ID)
			p := vs.Path
			if p != "" && dir != "" && !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			if p != "" {
				p = filepath.Clean(p)
			}
			switch {
			case vid == "":
				fail("%s: id is missing; give every volume a unique id (a UUID)", vwhere)
			case seen[vid]:
				fail("%s: volume id %q appears twice in this server", vwhere, vid)
			case volPath[vid] != "" && p != "" && volPath[vid] != p:
				// The same volume may be attached to several servers
				// (shareable), but then it must be the same disk.
				fail("%s: volume id %q is also used by server %q with another path (%s)", vwhere, vid, volServer[vid], volPath[vid])
			}
			seen[vid] = true
			if p == "" {
				fail("%s: path is missing; give the image file or block device of the disk", vwhere)
			} else if _, ok := volPath[vid]; !ok && vid != "" {
				volPath[vid] = p
				volServer[vid] = id
			}
			s.Volumes = append(s.Volumes, compute.Volume{
				ID:        vid,
				Name:      vs.Name,
				Path:      p,
				Bootable:  vs.Bootable,
				Shareable: vs.Shareable,
			})
		}
		out = append(out, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// serverRef names a server entry in messages: its position plus whatever
// identifies it.
func serverRef(i int, ss ServerSpec) string {
	ref := "servers[" + strconv.Itoa(i) + "]"
	switch {
	case ss.ID != "" && ss.Name != "":
		ref += " (" + ss.ID + ", " + ss.Name + ")"
	case ss.ID != "":
		ref += " (" + ss.ID + ")"
	case ss.Name != "":
		ref += " (" + ss.Name + ")"
	}
	return ref
}

// WriteInventory writes inv to path atomically: readers (a running driver)
// see either the old or the new file, never a part of it. It refuses an
// inventory that New would reject.
func WriteInventory(path string, inv Inventory) error {
	if _, err := inv.servers(""); err != nil {
		return fmt.Errorf("invalid inventory, not written: %w", err)
	}
	data, err := yaml.Marshal(inv)
	if err != nil {
		return fmt.Errorf("encode inventory: %w", err)
	}
	return writeFileAtomic(path, data, 0o644)
}

// writeFileAtomic writes data to a temporary file next to path, syncs it and
// renames it over path, then syncs the directory so the rename survives a
// crash.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func clone(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}
