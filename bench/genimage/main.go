// Command genimage writes two sparse disk images for the backup benchmark:
// disk.img, laid out like a used VM disk, and changed.img, the same disk
// with a few of its 4 MiB blocks rewritten.
//
// The image is cut into 4 MiB blocks grouped in runs of 1 to 16 blocks; each
// run is one kind:
//
//	hole    never written, a real hole of the sparse file (30%)
//	text    log and text lines: syslog, access log, JSON log (30%)
//	random  incompressible data, like compressed or encrypted files (30%)
//	dup     a copy of an earlier text or random block (10%)
//
// Content is a pure function of the seed and the block index, so the same
// flags give the same bytes on every machine, and blocks can be generated in
// parallel and in any order.
//
// Usage:
//
//	genimage -size-mb 2048 -seed 1 -changed-pct 1 -dir DIR
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// blockSize is the unit of layout and of change: the chunk size of csbs.
const blockSize = 4 << 20

// kind is what a block holds.
type kind uint8

const (
	hole kind = iota
	text
	random
	dup
)

func (k kind) String() string { return [...]string{"hole", "text", "random", "dup"}[k] }

// layout is the plan of an image: the kind of every block, the source of
// every dup block and which blocks the changed copy rewrites.
type layout struct {
	seed    uint64
	kinds   []kind
	src     []int // for dup blocks: the block copied; else -1
	changed map[int]bool
}

func plan(nblocks int, seed uint64, changedPct float64) *layout {
	l := &layout{seed: seed, kinds: make([]kind, nblocks), src: make([]int, nblocks), changed: map[int]bool{}}
	rnd := rand.New(rand.NewPCG(seed, 0x6c61796f7574))

	// Exact budgets per kind, so small images keep the proportions too.
	budget := [4]int{}
	budget[hole] = nblocks * 30 / 100
	budget[text] = nblocks * 30 / 100
	budget[random] = nblocks * 30 / 100
	budget[dup] = nblocks - budget[hole] - budget[text] - budget[random]

	var data []int // blocks written so far with original content
	for b := 0; b < nblocks; {
		var k kind
		switch {
		case b == 0 && budget[text] > 0:
			k = text // a disk starts with data (boot sector, partition table)
		default:
			left := nblocks - b
			n := rnd.IntN(left)
			for k = 0; k < dup; k++ {
				if n < budget[k] {
					break
				}
				n -= budget[k]
			}
		}
		run := min(1+rnd.IntN(16), budget[k])
		if run == 0 { // budget of a forced kind is spent: take any left
			for k = 0; budget[k] == 0; k++ {
			}
			run = min(1+rnd.IntN(16), budget[k])
		}
		budget[k] -= run
		for i := 0; i < run; i++ {
			kb := k
			if kb == dup && len(data) == 0 {
				kb = random // nothing to copy yet (tiny images only)
			}
			l.kinds[b] = kb
			l.src[b] = -1
			switch kb {
			case text, random:
				data = append(data, b)
			case dup:
				l.src[b] = data[rnd.IntN(len(data))]
			}
			b++
		}
	}

	n := int(float64(nblocks)*changedPct/100 + 0.5)
	if n < 1 && changedPct > 0 {
		n = 1
	}
	for _, b := range rnd.Perm(nblocks)[:min(n, nblocks)] {
		l.changed[b] = true
	}
	return l
}

// fill writes into p (len blockSize) the original content of block b.
func (l *layout) fill(p []byte, b int) {
	if l.kinds[b] == dup {
		b = l.src[b]
	}
	switch l.kinds[b] {
	case text:
		fillText(p, l.seed, b)
	case random:
		fillRandom(p, l.seed, uint64(b))
	}
}

func fillRandom(p []byte, seed, stream uint64) {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], stream)
	rand.NewChaCha8(s).Read(p)
}

var (
	hosts   = []string{"web-1", "web-2", "db-1", "cache-1", "worker-3", "lb-1"}
	users   = []string{"deploy", "root", "alice", "bob", "backup", "nagios", "postgres"}
	paths   = []string{"/api/v1/items", "/api/v1/users", "/static/app.js", "/static/style.css", "/login", "/healthz", "/api/v1/orders", "/images/logo.png"}
	agents  = []string{"Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0", "curl/7.88.1", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0 Safari/537.36", "Go-http-client/1.1", "kube-probe/1.29"}
	methods = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	codes   = []int{200, 200, 200, 200, 304, 404, 201, 500}
	levels  = []string{"info", "info", "info", "debug", "warn", "error"}
	msgs    = []string{"request served", "cache miss", "connection reset by peer", "slow query", "user logged in", "token refreshed", "job finished", "retrying upstream"}
	units   = []string{"cron.service", "nginx.service", "postgresql.service", "systemd-journald.service", "ssh.service"}
	months  = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
	hexd    = "0123456789abcdef"
)

// fillText fills p with log lines; timestamps advance with the block index
// so no two blocks are alike.
func fillText(p []byte, seed uint64, b int) {
	rnd := rand.New(rand.NewPCG(seed^0x74657874, uint64(b)))
	t := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(b) * 37 * time.Minute)
	line := make([]byte, 0, 512)
	for off := 0; off < len(p); {
		t = t.Add(time.Duration(rnd.IntN(900)) * time.Millisecond)
		line = appendLine(line[:0], rnd, t)
		off += copy(p[off:], line)
	}
}

func appendLine(b []byte, rnd *rand.Rand, t time.Time) []byte {
	ip := func(b []byte) []byte {
		b = append(b, "10."...)
		b = strconv.AppendInt(b, int64(rnd.IntN(4)), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(rnd.IntN(256)), 10)
		b = append(b, '.')
		return strconv.AppendInt(b, int64(1+rnd.IntN(254)), 10)
	}
	hexn := func(b []byte, n int) []byte {
		for range n {
			b = append(b, hexd[rnd.IntN(16)])
		}
		return b
	}
	switch rnd.IntN(4) {
	case 0: // access log
		b = ip(b)
		b = append(b, " - - ["...)
		b = t.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
		b = append(b, "] \""...)
		b = append(b, methods[rnd.IntN(len(methods))]...)
		b = append(b, ' ')
		b = append(b, paths[rnd.IntN(len(paths))]...)
		if rnd.IntN(2) == 0 {
			b = append(b, '/')
			b = strconv.AppendInt(b, int64(rnd.IntN(100000)), 10)
		}
		b = append(b, " HTTP/1.1\" "...)
		b = strconv.AppendInt(b, int64(codes[rnd.IntN(len(codes))]), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(rnd.IntN(60000)), 10)
		b = append(b, " \"-\" \""...)
		b = append(b, agents[rnd.IntN(len(agents))]...)
		b = append(b, "\"\n"...)
	case 1: // JSON application log
		b = append(b, `{"ts":"`...)
		b = t.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		b = append(b, `","level":"`...)
		b = append(b, levels[rnd.IntN(len(levels))]...)
		b = append(b, `","msg":"`...)
		b = append(b, msgs[rnd.IntN(len(msgs))]...)
		b = append(b, `","path":"`...)
		b = append(b, paths[rnd.IntN(len(paths))]...)
		b = append(b, `","ms":`...)
		b = strconv.AppendInt(b, int64(rnd.IntN(2000)), 10)
		b = append(b, `,"request_id":"`...)
		b = hexn(b, 16)
		b = append(b, "\"}\n"...)
	case 2: // sshd
		b = appendSyslog(b, rnd, t)
		b = append(b, "sshd["...)
		b = strconv.AppendInt(b, int64(1000+rnd.IntN(60000)), 10)
		b = append(b, "]: Accepted publickey for "...)
		b = append(b, users[rnd.IntN(len(users))]...)
		b = append(b, " from "...)
		b = ip(b)
		b = append(b, " port "...)
		b = strconv.AppendInt(b, int64(1024+rnd.IntN(64000)), 10)
		b = append(b, " ssh2: ED25519 SHA256:"...)
		b = hexn(b, 12)
		b = append(b, '\n')
	default: // systemd
		b = appendSyslog(b, rnd, t)
		b = append(b, "systemd[1]: "...)
		switch rnd.IntN(3) {
		case 0:
			b = append(b, "Started "...)
		case 1:
			b = append(b, "Stopping "...)
		default:
			b = append(b, "Reloading "...)
		}
		b = append(b, units[rnd.IntN(len(units))]...)
		b = append(b, " - session "...)
		b = strconv.AppendInt(b, int64(rnd.IntN(5000)), 10)
		b = append(b, " of user "...)
		b = append(b, users[rnd.IntN(len(users))]...)
		b = append(b, ".\n"...)
	}
	return b
}

func appendSyslog(b []byte, rnd *rand.Rand, t time.Time) []byte {
	b = append(b, months[t.Month()-1]...)
	b = t.AppendFormat(b, " _2 15:04:05 ")
	b = append(b, hosts[rnd.IntN(len(hosts))]...)
	return append(b, ' ')
}

func main() {
	sizeMB := flag.Int("size-mb", 2048, "image size in MiB (rounded up to 4 MiB)")
	seed := flag.Uint64("seed", 1, "seed of layout and content")
	pct := flag.Float64("changed-pct", 1, "percent of 4 MiB blocks the changed copy rewrites")
	dir := flag.String("dir", ".", "directory for disk.img and changed.img")
	flag.Parse()
	if *sizeMB < 4 {
		fmt.Fprintln(os.Stderr, "genimage: -size-mb must be at least 4")
		os.Exit(2)
	}
	if err := run(*dir, *sizeMB, *seed, *pct); err != nil {
		fmt.Fprintln(os.Stderr, "genimage:", err)
		os.Exit(1)
	}
}

func run(dir string, sizeMB int, seed uint64, pct float64) error {
	nblocks := (sizeMB + 3) / 4
	size := int64(nblocks) * blockSize
	l := plan(nblocks, seed, pct)

	var files [2]*os.File
	for i, name := range []string{"disk.img", "changed.img"} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		// Truncate first: blocks never written stay holes.
		if err := f.Truncate(size); err != nil {
			return err
		}
		files[i] = f
	}
	disk, changed := files[0], files[1]

	blocks := make(chan int)
	errc := make(chan error, runtime.NumCPU())
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, blockSize)
			for b := range blocks {
				off := int64(b) * blockSize
				if l.kinds[b] != hole {
					l.fill(p, b)
					if _, err := disk.WriteAt(p, off); err != nil {
						errc <- err
						return
					}
				}
				switch {
				case l.changed[b]:
					fillRandom(p, seed^0x6368616e676564, uint64(b))
				case l.kinds[b] == hole:
					continue
				}
				if _, err := changed.WriteAt(p, off); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for b := range nblocks {
		select {
		case blocks <- b:
		case err = <-errc:
			break feed
		}
	}
	close(blocks)
	wg.Wait()
	if err == nil && len(errc) > 0 {
		err = <-errc
	}
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := f.Close(); err != nil {
			return err
		}
	}

	var count [4]int
	for _, k := range l.kinds {
		count[k]++
	}
	fmt.Printf("genimage: %d MiB (%d blocks of 4 MiB): hole %d, text %d, random %d, dup %d; changed.img rewrites %d blocks\n",
		size>>20, nblocks, count[hole], count[text], count[random], count[dup], len(l.changed))
	return nil
}
