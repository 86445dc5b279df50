// Package mount shows disk images as a read-only FUSE file system: the
// disks of a backup, read on demand (csbs mount), so that one file can be
// copied out of last week's backup without restoring the whole disk.
//
// The tree is fixed when it is mounted: directories and files, each file a
// File read at any offset. Every write, create or change of attributes is
// refused (EROFS). Files that can tell their holes (Extents) answer
// SEEK_DATA and SEEK_HOLE, so `cp --sparse` and `qemu-img` skip them.
package mount

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// File is one file of the tree.
type File interface {
	io.ReaderAt
	Size() int64
}

// Extent is a run of a File: data, or a hole that reads as zeros.
type Extent struct {
	Offset, Length int64
	Data           bool
}

// Extenter is a File that knows its holes.
type Extenter interface {
	Extents(off, n int64) []Extent
}

// Dir is a directory of the tree.
type Dir struct {
	Files map[string]File
	Dirs  map[string]*Dir
}

// Mount mounts root read-only on dir (which must exist) and returns the
// server: Unmount it when done (Wait returns once it is unmounted, by
// Unmount or by `umount`). As root it mounts with mount(2) itself; other
// users need fusermount3 (Debian package fuse3).
func Mount(dir string, root *Dir, log *slog.Logger) (*fuse.Server, error) {
	if log == nil {
		log = slog.Default()
	}
	long := time.Hour // nothing changes under a mount: cache names and sizes
	srv, err := fs.Mount(dir, &dirNode{d: root, log: log}, &fs.Options{
		AttrTimeout: &long, EntryTimeout: &long,
		MountOptions: fuse.MountOptions{
			FsName: "csbs", Name: "csbs", DirectMount: true, Options: []string{"ro"},
			MaxReadAhead: 1 << 20,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mount on %s: %w", dir, err)
	}
	return srv, nil
}

type dirNode struct {
	fs.Inode
	d   *Dir
	log *slog.Logger
}

var (
	_ fs.NodeOnAdder   = (*dirNode)(nil)
	_ fs.NodeGetattrer = (*dirNode)(nil)
)

func (n *dirNode) OnAdd(ctx context.Context) {
	for name, f := range n.d.Files {
		n.AddChild(name, n.NewPersistentInode(ctx, &fileNode{f: f, log: n.log}, fs.StableAttr{Mode: fuse.S_IFREG}), false)
	}
	for name, sub := range n.d.Dirs {
		n.AddChild(name, n.NewPersistentInode(ctx, &dirNode{d: sub, log: n.log}, fs.StableAttr{Mode: fuse.S_IFDIR}), false)
	}
}

func (n *dirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFDIR | 0o555
	return 0
}

type fileNode struct {
	fs.Inode
	f   File
	log *slog.Logger
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeLseeker   = (*fileNode)(nil)
)

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = fuse.S_IFREG | 0o444
	out.Size = uint64(n.f.Size())
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	k, err := n.f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		n.log.Warn("read from a mounted backup failed", "offset", off, "length", len(dest), "err", err)
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the file's extents.
func (n *fileNode) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	x, ok := n.f.(Extenter)
	size := uint64(n.f.Size())
	if off >= size {
		return 0, syscall.ENXIO
	}
	if !ok {
		if whence == seekHole {
			return size, 0
		}
		return off, 0
	}
	for _, e := range x.Extents(int64(off), int64(size-off)) {
		if e.Data == (whence == seekData) {
			return max(off, uint64(e.Offset)), 0
		}
	}
	if whence == seekHole {
		return size, 0 // the end of the file is a hole
	}
	return 0, syscall.ENXIO
}

// The whence values of lseek(2) for data and holes.
const (
	seekData = 3
	seekHole = 4
)
