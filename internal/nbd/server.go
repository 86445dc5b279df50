// Package nbd speaks the Network Block Device protocol (fixed newstyle
// negotiation, structured replies, metadata contexts), both ways: a client
// (client.go) reads and writes disks that QEMU exports (libvirt's backup
// jobs, qemu-nbd), and a server (this file) exports a backup's disk
// read-only, so that QEMU and its tools read it directly:
// `qemu-img convert nbd+unix:///?socket=…`, or a qcow2 overlay whose
// backing file is the export.
//
// What the server serves: NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST and
// NBD_OPT_EXPORT_NAME for the one export (any name, the empty one
// included); structured replies (NBD_OPT_STRUCTURED_REPLY) with holes sent
// as NBD_REPLY_TYPE_OFFSET_HOLE; the "base:allocation" meta context and
// NBD_CMD_BLOCK_STATUS, so clients skip what holds nothing; NBD_CMD_READ,
// NBD_CMD_CACHE, NBD_CMD_FLUSH (nothing to flush) and NBD_CMD_DISC. Writes,
// trims and write-zeroes are refused with EPERM: the export is read-only.
// TLS is not offered: listen on a unix socket or loopback.
//
// The protocol is the one described by the NBD project's proto.md.
package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// Disk is what an export serves. ReadAt follows io.ReaderAt; Extents
// describes a range in order and covering it, as runs with the flags of
// the base:allocation context (StateHole|StateZero for what reads as
// zeros, 0 for data).
type Disk interface {
	io.ReaderAt
	Size() int64
	Extents(off, n int64) []Extent
}

// Server serves one Disk to any number of clients.
type Server struct {
	Disk Disk
	Name string // the export's name, listed by NBD_OPT_LIST; any name is accepted
	Log  *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// Serve accepts connections on l until ctx ends or l fails, serving each
// in a goroutine; when ctx ends it closes l and every connection.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.mu.Lock()
		if s.conns == nil {
			s.conns = map[net.Conn]bool{}
		}
		s.conns[c] = true
		s.mu.Unlock()
		wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			if err := s.serveConn(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.Log.Warn("nbd client ended with an error", "remote", c.RemoteAddr().String(), "err", err)
			}
		})
	}
}

// conn is one client's session.
type conn struct {
	s          *Server
	rd         *bufio.Reader
	w          *bufio.Writer
	noZeroes   bool
	structured bool
	allocation bool // base:allocation selected
}

func (s *Server) serveConn(c net.Conn) error {
	cn := &conn{s: s, rd: bufio.NewReader(c), w: bufio.NewWriterSize(c, 1<<20)}
	ok, err := cn.negotiate()
	if err != nil || !ok {
		return err
	}
	return cn.transmit()
}

func (c *conn) u16() (uint16, error) {
	var b [2]byte
	_, err := io.ReadFull(c.rd, b[:])
	return binary.BigEndian.Uint16(b[:]), err
}

func (c *conn) u32() (uint32, error) {
	var b [4]byte
	_, err := io.ReadFull(c.rd, b[:])
	return binary.BigEndian.Uint32(b[:]), err
}

func (c *conn) u64() (uint64, error) {
	var b [8]byte
	_, err := io.ReadFull(c.rd, b[:])
	return binary.BigEndian.Uint64(b[:]), err
}

func put16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func put32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func put64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// negotiate runs the handshake and the option haggling. It returns true
// when the client entered transmission, false when it aborted.
func (c *conn) negotiate() (bool, error) {
	hello := put64(put64(nil, nbdMagic), optMagic)
	hello = put16(hello, flagFixedNewstyle|flagNoZeroes)
	if _, err := c.w.Write(hello); err != nil {
		return false, err
	}
	if err := c.w.Flush(); err != nil {
		return false, err
	}
	cflags, err := c.u32()
	if err != nil {
		return false, err
	}
	if cflags&clientFixed == 0 {
		return false, errors.New("client does not speak fixed newstyle negotiation")
	}
	c.noZeroes = cflags&clientNoZeros != 0
	for {
		magic, err := c.u64()
		if err != nil {
			return false, err
		}
		if magic != optMagic {
			return false, fmt.Errorf("bad option magic %#x", magic)
		}
		opt, err := c.u32()
		if err != nil {
			return false, err
		}
		n, err := c.u32()
		if err != nil {
			return false, err
		}
		if n > maxOptionLength {
			return false, fmt.Errorf("option %d of %d bytes: too long", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.rd, data); err != nil {
			return false, err
		}
		done, err := c.option(opt, data)
		if err != nil {
			return false, err
		}
		if err := c.w.Flush(); err != nil {
			return false, err
		}
		switch done {
		case optAbort:
			return false, nil
		case optGo, optExportName:
			return true, nil
		}
	}
}

// reply writes an option reply.
func (c *conn) reply(opt, typ uint32, data []byte) error {
	b := put64(nil, optReplyMagic)
	b = put32(put32(put32(b, opt), typ), uint32(len(data)))
	_, err := c.w.Write(append(b, data...))
	return err
}

func (c *conn) transmissionFlags() uint16 {
	f := uint16(transFlagHasFlags | transFlagReadOnly | transFlagSendFlush | transFlagCanMultiConn | transFlagSendCache)
	if c.structured {
		f |= transFlagSendDF
	}
	return f
}

// option answers one option. It returns opt when the option ends the
// negotiation (abort, go, export name), 0 otherwise.
func (c *conn) option(opt uint32, data []byte) (uint32, error) {
	switch opt {
	case optAbort:
		return opt, c.reply(opt, repAck, nil)
	case optExportName:
		// No reply header: the size, flags and (unless no-zeroes) padding.
		b := put16(put64(nil, uint64(c.s.Disk.Size())), c.transmissionFlags())
		if !c.noZeroes {
			b = append(b, make([]byte, 124)...)
		}
		_, err := c.w.Write(b)
		return opt, err
	case optList:
		if len(data) != 0 {
			return 0, c.reply(opt, repErrBit+3, nil)
		}
		if err := c.reply(opt, repServer, append(put32(nil, uint32(len(c.s.Name))), c.s.Name...)); err != nil {
			return 0, err
		}
		return 0, c.reply(opt, repAck, nil)
	case optStructuredReply:
		if len(data) != 0 {
			return 0, c.reply(opt, repErrBit+3, nil)
		}
		c.structured = true
		return 0, c.reply(opt, repAck, nil)
	case optInfo, optGo:
		if len(data) < 6 {
			return 0, c.reply(opt, repErrBit+3, nil)
		}
		nameLen := binary.BigEndian.Uint32(data)
		if uint64(nameLen)+6 > uint64(len(data)) {
			return 0, c.reply(opt, repErrBit+3, nil)
		}
		rest := data[4+nameLen:]
		count := int(binary.BigEndian.Uint16(rest))
		if len(rest) != 2+2*count {
			return 0, c.reply(opt, repErrBit+3, nil)
		}
		info := put64(put16(nil, infoExport), uint64(c.s.Disk.Size()))
		if err := c.reply(opt, repInfo, put16(info, c.transmissionFlags())); err != nil {
			return 0, err
		}
		for i := range count {
			if binary.BigEndian.Uint16(rest[2+2*i:]) != infoBlockSize {
				continue
			}
			// Any alignment works; 4 KiB is preferred; 32 MiB at most.
			bs := put32(put32(put32(put16(nil, infoBlockSize), 1), 4096), maxServedRequest)
			if err := c.reply(opt, repInfo, bs); err != nil {
				return 0, err
			}
		}
		if err := c.reply(opt, repAck, nil); err != nil {
			return 0, err
		}
		if opt == optGo {
			return opt, nil
		}
		return 0, nil
	case optSetMetaContext, optListMetaContext:
		queries, ok := metaQueries(data)
		if !ok {
			return 0, c.reply(opt, repErrBit+3, nil)
		}
		if opt == optSetMetaContext {
			if !c.structured {
				return 0, c.reply(opt, repErrBit+3, nil)
			}
			c.allocation = false
		}
		for _, q := range queries {
			// An empty list query, or "base:" asks for every context of
			// the namespace.
			if q == metaAllocation || (opt == optListMetaContext && (q == "base:" || q == "")) {
				id := uint32(0)
				if opt == optSetMetaContext {
					id, c.allocation = allocationCtxID, true
				}
				if err := c.reply(opt, repMetaContext, append(put32(nil, id), metaAllocation...)); err != nil {
					return 0, err
				}
			}
		}
		if opt == optListMetaContext && len(queries) == 0 {
			if err := c.reply(opt, repMetaContext, append(put32(nil, 0), metaAllocation...)); err != nil {
				return 0, err
			}
		}
		return 0, c.reply(opt, repAck, nil)
	case optStartTLS:
		return 0, c.reply(opt, repErrBit+2, nil)
	}
	return 0, c.reply(opt, repErrBit+1, nil)
}

// metaQueries parses the data of a meta-context option: export name,
// then a count of queries, each a length and a string.
func metaQueries(d []byte) ([]string, bool) {
	if len(d) < 4 {
		return nil, false
	}
	n := binary.BigEndian.Uint32(d)
	if uint64(n)+8 > uint64(len(d)) {
		return nil, false
	}
	d = d[4+n:]
	count := binary.BigEndian.Uint32(d)
	d = d[4:]
	var qs []string
	for range count {
		if len(d) < 4 {
			return nil, false
		}
		l := binary.BigEndian.Uint32(d)
		if uint64(l)+4 > uint64(len(d)) {
			return nil, false
		}
		qs = append(qs, string(d[4:4+l]))
		d = d[4+l:]
	}
	return qs, len(d) == 0
}

// transmit serves requests until the client disconnects. Replies are
// written in request order by this goroutine.
func (c *conn) transmit() error {
	if err := c.w.Flush(); err != nil {
		return err
	}
	buf := make([]byte, 0, 1<<20)
	for {
		magic, err := c.u32()
		if err != nil {
			return err
		}
		if magic != requestMagic {
			return fmt.Errorf("bad request magic %#x", magic)
		}
		flags, err := c.u16()
		if err != nil {
			return err
		}
		typ, err := c.u16()
		if err != nil {
			return err
		}
		cookie, err := c.u64()
		if err != nil {
			return err
		}
		off, err := c.u64()
		if err != nil {
			return err
		}
		n, err := c.u32()
		if err != nil {
			return err
		}
		switch typ {
		case cmdDisc:
			return nil
		case cmdWrite:
			// Drain the payload so the stream stays in step, then refuse.
			if _, err := io.CopyN(io.Discard, c.rd, int64(n)); err != nil {
				return err
			}
			err = c.fail(cookie, errPerm, "the export is read-only")
		case cmdTrim, cmdWriteZeroes:
			err = c.fail(cookie, errPerm, "the export is read-only")
		case cmdFlush:
			err = c.done(cookie)
		case cmdRead, cmdCache:
			switch {
			case n > maxServedRequest:
				err = c.fail(cookie, errOverflow, "request longer than 32 MiB")
			case off+uint64(n) > uint64(c.s.Disk.Size()) || off+uint64(n) < off:
				err = c.fail(cookie, errInval, "request beyond the end of the disk")
			case typ == cmdCache:
				err = c.done(cookie)
			default:
				buf, err = c.read(cookie, int64(off), int64(n), buf)
			}
		case cmdBlockStatus:
			switch {
			case !c.structured || !c.allocation:
				err = c.fail(cookie, errInval, "block status needs structured replies and the base:allocation context")
			case off+uint64(n) > uint64(c.s.Disk.Size()) || n == 0:
				err = c.fail(cookie, errInval, "request beyond the end of the disk")
			default:
				err = c.blockStatus(cookie, int64(off), int64(n), flags&cmdFlagReqOne != 0)
			}
		default:
			err = c.fail(cookie, errNotSup, "command not supported")
		}
		if err != nil {
			return err
		}
		if err := c.w.Flush(); err != nil {
			return err
		}
	}
}

// structuredHeader starts a structured reply chunk.
func structuredHeader(flags, typ uint16, cookie uint64, length int) []byte {
	b := put32(nil, structuredReplyMagic)
	b = put16(put16(b, flags), typ)
	return put32(put64(b, cookie), uint32(length))
}

func (c *conn) done(cookie uint64) error {
	if c.structured {
		_, err := c.w.Write(structuredHeader(replyFlagDone, replyNone, cookie, 0))
		return err
	}
	_, err := c.w.Write(put64(put32(put32(nil, simpleReplyMagic), 0), cookie))
	return err
}

// fail answers a request with an error (and a message, when structured).
func (c *conn) fail(cookie uint64, code uint32, msg string) error {
	if c.structured {
		payload := put16(put32(nil, code), uint16(len(msg)))
		payload = append(payload, msg...)
		_, err := c.w.Write(append(structuredHeader(replyFlagDone, replyErrorBit+1, cookie, len(payload)), payload...))
		return err
	}
	_, err := c.w.Write(put64(put32(put32(nil, simpleReplyMagic), code), cookie))
	return err
}

// read answers NBD_CMD_READ: with structured replies, data chunks and hole
// chunks for the runs of zeros; otherwise all bytes in one simple reply.
func (c *conn) read(cookie uint64, off, n int64, buf []byte) ([]byte, error) {
	if n == 0 {
		return buf, c.done(cookie)
	}
	if !c.structured {
		buf = grow(buf, int(n))
		if k, err := c.s.Disk.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && int64(k) == n) {
			c.s.Log.Warn("nbd read failed", "offset", off, "length", n, "err", err)
			return buf, c.fail(cookie, errIO, "")
		}
		_, err := c.w.Write(append(put64(put32(put32(nil, simpleReplyMagic), 0), cookie), buf...))
		return buf, err
	}
	// Read everything first: an error is then one error reply, never data
	// followed by an error.
	ext := c.s.Disk.Extents(off, n)
	buf = grow(buf, int(n))
	for _, e := range ext {
		if e.Flags&StateZero != 0 {
			continue
		}
		p := buf[e.Off-off : e.Off-off+e.Len]
		if k, err := c.s.Disk.ReadAt(p, e.Off); err != nil && !(errors.Is(err, io.EOF) && k == len(p)) {
			c.s.Log.Warn("nbd read failed", "offset", e.Off, "length", e.Len, "err", err)
			return buf, c.fail(cookie, errIO, err.Error())
		}
	}
	for i, e := range ext {
		flags := uint16(0)
		if i == len(ext)-1 {
			flags = replyFlagDone
		}
		if e.Flags&StateZero != 0 {
			b := structuredHeader(flags, replyOffsetHole, cookie, 12)
			if _, err := c.w.Write(put32(put64(b, uint64(e.Off)), uint32(e.Len))); err != nil {
				return buf, err
			}
			continue
		}
		b := put64(structuredHeader(flags, replyOffsetData, cookie, 8+int(e.Len)), uint64(e.Off))
		if _, err := c.w.Write(b); err != nil {
			return buf, err
		}
		if _, err := c.w.Write(buf[e.Off-off : e.Off-off+e.Len]); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation.
func (c *conn) blockStatus(cookie uint64, off, n int64, one bool) error {
	ext := c.s.Disk.Extents(off, n)
	if one && len(ext) > 1 {
		ext = ext[:1]
	}
	payload := put32(nil, allocationCtxID)
	for _, e := range ext {
		payload = put32(put32(payload, uint32(e.Len)), e.Flags)
	}
	_, err := c.w.Write(append(structuredHeader(replyFlagDone, replyBlockStatus, cookie, len(payload)), payload...))
	return err
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// The server's limits and its one metadata context.
const (
	metaAllocation   = "base:allocation"
	allocationCtxID  = 1
	maxOptionLength  = 64 << 10
	maxServedRequest = 32 << 20 // QEMU's limit too
)
