package nbd

// The client: the subset csbs needs to read disks exported by QEMU (a
// libvirt pull-mode backup job, qemu-nbd) and to write them back: the
// fixed newstyle handshake with structured replies and metadata contexts
// (base:allocation, qemu:dirty-bitmap:…), and the READ, WRITE,
// WRITE_ZEROES, FLUSH and BLOCK_STATUS commands.
//
// No Go library on the module proxy does this without cgo (libnbd's
// bindings need it; the pure-Go ones drive the kernel's /dev/nbd devices),
// so this small client is written for it.
//
// A Conn sends one request at a time; calls are serialized and safe for
// concurrent use. Any protocol or I/O error breaks the connection: every
// later call fails with it, and callers reconnect if they want to retry.
// An error the server reports for one command (EIO, EINVAL…) is an *Error
// and leaves the connection usable.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Dirty is the flag of a qemu:dirty-bitmap:… context for changed blocks.
const Dirty = 1 << 0

// maxRequest bounds the length of one READ or WRITE: QEMU refuses more than
// 32 MiB.
const maxRequest = 16 << 20

// Error is an error the server returned for one command; the connection
// stays usable.
type Error struct {
	Op    string
	Errno uint32
	Msg   string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("nbd %s: server error %d: %s", e.Op, e.Errno, e.Msg)
	}
	return fmt.Sprintf("nbd %s: server error %d", e.Op, e.Errno)
}

// Conn is a connection to one export.
type Conn struct {
	mu       sync.Mutex
	c        net.Conn
	broken   error
	size     int64
	flags    uint16
	contexts map[string]uint32 // metadata context name → id
	cookie   uint64
}

// Dial connects to the export name of the server at network/address
// ("unix", a socket path) and asks for the metadata contexts given (those
// the server does not know are left out: see HasContext).
func Dial(ctx context.Context, network, address, export string, contexts ...string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("nbd: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	n := &Conn{c: c, contexts: map[string]uint32{}}
	if err := n.handshake(export, contexts); err != nil {
		c.Close()
		return nil, fmt.Errorf("nbd: export %q at %s: %w", export, address, err)
	}
	c.SetDeadline(timeZero)
	return n, nil
}

// Size is the export's size in bytes.
func (n *Conn) Size() int64 { return n.size }

// ReadOnly reports whether the server refuses writes.
func (n *Conn) ReadOnly() bool { return n.flags&transFlagReadOnly != 0 }

// HasContext reports whether the server agreed to the metadata context.
func (n *Conn) HasContext(name string) bool { _, ok := n.contexts[name]; return ok }

func (n *Conn) handshake(export string, contexts []string) error {
	var hdr [18]byte
	if _, err := io.ReadFull(n.c, hdr[:]); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hdr[0:]) != nbdMagic || binary.BigEndian.Uint64(hdr[8:]) != optMagic {
		return errors.New("not a newstyle NBD server")
	}
	sflags := binary.BigEndian.Uint16(hdr[16:])
	if sflags&flagFixedNewstyle == 0 {
		return errors.New("the server does not speak fixed newstyle")
	}
	cflags := uint32(flagFixedNewstyle)
	if sflags&flagNoZeroes != 0 {
		cflags |= flagNoZeroes
	}
	if err := binary.Write(n.c, binary.BigEndian, cflags); err != nil {
		return err
	}
	// Structured replies: reads skip holes, and block status needs them.
	if err := n.sendOpt(optStructuredReply, nil); err != nil {
		return err
	}
	if typ, data, err := n.readOptReply(optStructuredReply); err != nil {
		return err
	} else if typ != repAck {
		return fmt.Errorf("the server refuses structured replies (reply %#x %q)", typ, data)
	}
	if len(contexts) > 0 {
		b := appendString32(nil, export)
		b = binary.BigEndian.AppendUint32(b, uint32(len(contexts)))
		for _, c := range contexts {
			b = appendString32(b, c)
		}
		if err := n.sendOpt(optSetMetaContext, b); err != nil {
			return err
		}
		for {
			typ, data, err := n.readOptReply(optSetMetaContext)
			if err != nil {
				return err
			}
			if typ == repAck {
				break
			}
			if typ == repMetaContext && len(data) >= 4 {
				n.contexts[string(data[4:])] = binary.BigEndian.Uint32(data)
				continue
			}
			if typ&repErrBit != 0 {
				return fmt.Errorf("set metadata contexts %v: error reply %#x: %s", contexts, typ, data)
			}
		}
	}
	b := appendString32(nil, export)
	b = binary.BigEndian.AppendUint16(b, 0) // no information requests
	if err := n.sendOpt(optGo, b); err != nil {
		return err
	}
	for {
		typ, data, err := n.readOptReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repAck:
			if n.size == 0 && n.flags == 0 {
				return errors.New("the server sent no export information")
			}
			return nil
		case typ == repInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == infoExport:
			n.size = int64(binary.BigEndian.Uint64(data[2:]))
			n.flags = binary.BigEndian.Uint16(data[10:])
		case typ&repErrBit != 0:
			return fmt.Errorf("open export: error reply %#x: %s", typ, data)
		}
	}
}

func appendString32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func (n *Conn) sendOpt(opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	_, err := n.c.Write(append(b, data...))
	return err
}

func (n *Conn) readOptReply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(n.c, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read option reply: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != optReplyMagic || binary.BigEndian.Uint32(h[8:]) != opt {
		return 0, nil, errors.New("bad option reply")
	}
	typ, l := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
	if l > 1<<20 {
		return 0, nil, fmt.Errorf("option reply of %d bytes", l)
	}
	data := make([]byte, l)
	if _, err := io.ReadFull(n.c, data); err != nil {
		return 0, nil, fmt.Errorf("read option reply: %w", err)
	}
	return typ, data, nil
}

// request sends one command; payload is written after the header (WRITE).
func (n *Conn) request(typ uint16, flags uint16, off int64, length uint32, payload []byte) (uint64, error) {
	n.cookie++
	b := make([]byte, 28, 28+len(payload))
	binary.BigEndian.PutUint32(b[0:], requestMagic)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], n.cookie)
	binary.BigEndian.PutUint64(b[16:], uint64(off))
	binary.BigEndian.PutUint32(b[24:], length)
	if _, err := n.c.Write(b); err != nil {
		return 0, err
	}
	if len(payload) > 0 {
		if _, err := n.c.Write(payload); err != nil {
			return 0, err
		}
	}
	return n.cookie, nil
}

// chunk is one reply chunk (a simple reply is one chunk, done).
type chunk struct {
	typ     uint16
	done    bool
	payload []byte // structured chunks only
}

// readChunk reads the next reply chunk of cookie to a command other than
// READ (whose replies read handles itself).
func (n *Conn) readChunk(cookie uint64) (chunk, error) {
	var m [4]byte
	if _, err := io.ReadFull(n.c, m[:]); err != nil {
		return chunk{}, err
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case simpleReplyMagic:
		var h [12]byte
		if _, err := io.ReadFull(n.c, h[:]); err != nil {
			return chunk{}, err
		}
		if binary.BigEndian.Uint64(h[4:]) != cookie {
			return chunk{}, errors.New("reply to another request")
		}
		if e := binary.BigEndian.Uint32(h[0:]); e != 0 {
			return chunk{}, &Error{Errno: e}
		}
		return chunk{typ: replyNone, done: true}, nil
	case structuredReplyMagic:
		var h [16]byte
		if _, err := io.ReadFull(n.c, h[:]); err != nil {
			return chunk{}, err
		}
		flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
		if binary.BigEndian.Uint64(h[4:]) != cookie {
			return chunk{}, errors.New("reply to another request")
		}
		l := binary.BigEndian.Uint32(h[12:])
		if l > maxRequest+64 {
			return chunk{}, fmt.Errorf("reply chunk of %d bytes", l)
		}
		p := make([]byte, l)
		if _, err := io.ReadFull(n.c, p); err != nil {
			return chunk{}, err
		}
		return chunk{typ: typ, done: flags&replyFlagDone != 0, payload: p}, nil
	default:
		return chunk{}, errors.New("bad reply magic")
	}
}

// errorChunk turns an error chunk into an *Error.
func errorChunk(op string, p []byte) error {
	e := &Error{Op: op}
	if len(p) >= 6 {
		e.Errno = binary.BigEndian.Uint32(p)
		ml := int(binary.BigEndian.Uint16(p[4:]))
		if 6+ml <= len(p) {
			e.Msg = string(p[6 : 6+ml])
		}
	}
	return e
}

// do runs one command under the lock and breaks the connection on any
// error that is not the server's answer.
func (n *Conn) do(ctx context.Context, f func() error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.broken != nil {
		return n.broken
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { n.c.SetDeadline(timePast) })
	err := f()
	if !stop() {
		// The context cut the I/O short: the stream is mid-reply.
		n.broken = fmt.Errorf("nbd: connection abandoned: %w", ctx.Err())
		n.c.Close()
		return n.broken
	}
	var se *Error
	if err != nil && !errors.As(err, &se) {
		n.broken = fmt.Errorf("nbd: connection broken: %w", err)
		n.c.Close()
		return n.broken
	}
	return err
}

// ReadAt reads len(p) bytes at off; holes the server reports are zeroed
// without being sent. Reading past Size is io.EOF.
func (n *Conn) ReadAt(p []byte, off int64) (int, error) {
	return n.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context.
func (n *Conn) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= n.size {
		return 0, io.EOF
	}
	want := p
	if rest := n.size - off; int64(len(p)) > rest {
		want = p[:rest]
	}
	for done := 0; done < len(want); {
		k := min(len(want)-done, maxRequest)
		if err := n.do(ctx, func() error { return n.read(want[done:done+k], off+int64(done)) }); err != nil {
			return done, err
		}
		done += k
	}
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(p), nil
}

func (n *Conn) read(p []byte, off int64) error {
	cookie, err := n.request(cmdRead, 0, off, uint32(len(p)), nil)
	if err != nil {
		return err
	}
	var serr error
	for {
		var m [4]byte
		if _, err := io.ReadFull(n.c, m[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(m[:]) == simpleReplyMagic {
			var h [12]byte
			if _, err := io.ReadFull(n.c, h[:]); err != nil {
				return err
			}
			if binary.BigEndian.Uint64(h[4:]) != cookie {
				return errors.New("reply to another request")
			}
			if e := binary.BigEndian.Uint32(h[0:]); e != 0 {
				return &Error{Op: "read", Errno: e}
			}
			_, err := io.ReadFull(n.c, p)
			return err
		}
		if binary.BigEndian.Uint32(m[:]) != structuredReplyMagic {
			return errors.New("bad reply magic")
		}
		var h [16]byte
		if _, err := io.ReadFull(n.c, h[:]); err != nil {
			return err
		}
		flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
		if binary.BigEndian.Uint64(h[4:]) != cookie {
			return errors.New("reply to another request")
		}
		l := int64(binary.BigEndian.Uint32(h[12:]))
		switch {
		case typ == replyOffsetData && l >= 8:
			// The data goes straight into p: no copy of a whole read.
			var o [8]byte
			if _, err := io.ReadFull(n.c, o[:]); err != nil {
				return err
			}
			at := int64(binary.BigEndian.Uint64(o[:]))
			if at < off || at+l-8 > off+int64(len(p)) {
				return errors.New("read reply outside the request")
			}
			if _, err := io.ReadFull(n.c, p[at-off:at-off+l-8]); err != nil {
				return err
			}
		default:
			if l > maxRequest+64 {
				return fmt.Errorf("reply chunk of %d bytes", l)
			}
			c := make([]byte, l)
			if _, err := io.ReadFull(n.c, c); err != nil {
				return err
			}
			switch {
			case typ == replyOffsetHole && len(c) == 12:
				at := int64(binary.BigEndian.Uint64(c))
				hl := int64(binary.BigEndian.Uint32(c[8:]))
				if at < off || at+hl > off+int64(len(p)) {
					return errors.New("hole reply outside the request")
				}
				clear(p[at-off : at-off+hl])
			case typ&replyErrorBit != 0:
				serr = errorChunk("read", c)
			}
		}
		if flags&replyFlagDone != 0 {
			return serr
		}
	}
}

// WriteAt writes p at off.
func (n *Conn) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > n.size {
		return 0, fmt.Errorf("nbd write: %d bytes at %d pass the end of the %d-byte export", len(p), off, n.size)
	}
	for done := 0; done < len(p); {
		k := min(len(p)-done, maxRequest)
		err := n.do(context.Background(), func() error {
			return n.simple("write", cmdWrite, 0, off+int64(done), uint32(k), p[done:done+k])
		})
		if err != nil {
			return done, err
		}
		done += k
	}
	return len(p), nil
}

// Zero makes length bytes at off read as zeros; the server may punch holes
// or use zero clusters for them.
func (n *Conn) Zero(ctx context.Context, off, length int64) error {
	if n.flags&transFlagWriteZeros == 0 {
		buf := make([]byte, min(length, maxRequest))
		for length > 0 {
			k := min(length, int64(len(buf)))
			if _, err := n.WriteAt(buf[:k], off); err != nil {
				return err
			}
			off, length = off+k, length-k
		}
		return nil
	}
	for length > 0 {
		k := min(length, 1<<30)
		if err := n.do(ctx, func() error { return n.simple("write zeroes", cmdWriteZeroes, 0, off, uint32(k), nil) }); err != nil {
			return err
		}
		off, length = off+k, length-k
	}
	return nil
}

// Flush makes every completed write durable.
func (n *Conn) Flush(ctx context.Context) error {
	if n.flags&transFlagSendFlush == 0 {
		return nil // the server writes through
	}
	return n.do(ctx, func() error { return n.simple("flush", cmdFlush, 0, 0, 0, nil) })
}

// simple runs a command whose reply carries no data.
func (n *Conn) simple(op string, typ uint16, flags uint16, off int64, length uint32, payload []byte) error {
	cookie, err := n.request(typ, flags, off, length, payload)
	if err != nil {
		return err
	}
	var serr error
	for {
		c, err := n.readChunk(cookie)
		if err != nil {
			var se *Error
			if errors.As(err, &se) {
				se.Op = op
			}
			return err
		}
		if c.typ&replyErrorBit != 0 {
			serr = errorChunk(op, c.payload)
		}
		if c.done {
			return serr
		}
	}
}

// BlockStatus returns the status of [off, off+length) in the metadata
// context name, as consecutive extents that cover the range exactly.
func (n *Conn) BlockStatus(ctx context.Context, name string, off, length int64) ([]Extent, error) {
	id, ok := n.contexts[name]
	if !ok {
		return nil, fmt.Errorf("nbd block status: the server did not agree to metadata context %q", name)
	}
	end := min(off+length, n.size)
	var out []Extent
	for pos := off; pos < end; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ask := uint32(min(end-pos, 1<<30))
		var got []Extent
		err := n.do(ctx, func() error {
			var err error
			got, err = n.blockStatus(id, pos, ask)
			return err
		})
		if err != nil {
			return nil, err
		}
		if len(got) == 0 {
			return nil, errors.New("nbd block status: the server described nothing")
		}
		for _, e := range got {
			e.Len = min(e.Len, end-pos)
			if e.Len <= 0 {
				break
			}
			e.Off = pos
			out = append(out, e)
			pos += e.Len
		}
	}
	return out, nil
}

func (n *Conn) blockStatus(id uint32, off int64, length uint32) ([]Extent, error) {
	cookie, err := n.request(cmdBlockStatus, 0, off, length, nil)
	if err != nil {
		return nil, err
	}
	var out []Extent
	var serr error
	for {
		c, err := n.readChunk(cookie)
		if err != nil {
			return nil, err
		}
		switch {
		case c.typ == replyBlockStatus && len(c.payload) >= 4:
			if binary.BigEndian.Uint32(c.payload) != id {
				break // another context: not asked for, ignore
			}
			for p := c.payload[4:]; len(p) >= 8; p = p[8:] {
				out = append(out, Extent{Len: int64(binary.BigEndian.Uint32(p)), Flags: binary.BigEndian.Uint32(p[4:])})
			}
		case c.typ&replyErrorBit != 0:
			serr = errorChunk("block status", c.payload)
		}
		if c.done {
			return out, serr
		}
	}
}

// Close ends the session politely (NBD_CMD_DISC) and closes the socket.
func (n *Conn) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.broken == nil {
		n.request(cmdDisc, 0, 0, 0, nil)
		n.broken = errors.New("nbd: connection closed")
	}
	return n.c.Close()
}
