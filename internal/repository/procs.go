package repository

// Procs is the GOMAXPROCS that a process running backups and restores
// should use, given the environment's GOMAXPROCS (env) and the value the
// Go runtime chose (cur): cur when env is set (the runtime took it from
// there), else cur + 2.
//
// Why more Ps than CPUs: a goroutine in a blocking system call (a direct
// read of a clone, a pack write, an fsync) keeps its P until the
// runtime's monitor takes it back, which happens up to 10 ms later when
// the monitor has backed off. With one P per CPU, the CPUs then idle while
// chunks wait to be hashed, compressed and sealed. Measured with
// bench/backup.sh's image (2 GiB, 2 CPUs, 5 alternating rounds through
// csbs serve): the full backup of a reflink clone took a median 1.62 s
// with 2 Ps, the CPUs idle or waiting for I/O for 0.5-0.7 s of it, 1.44 s
// with 4 Ps and 1.41 s with 6; a restore 1.40 s with 2 and 1.18 s with 6.
//
// Why not more: where the reads are served from the page cache (an image
// read live), they are CPU work, and every extra P is one more thread
// competing for the CPUs. Incremental backups that read a live image took
// 6-12% longer with 4 Ps than with 2, and 10-15% with 6.
func Procs(env string, cur int) int {
	if env != "" {
		return cur
	}
	return cur + 2
}
