package repository

// Procs is the GOMAXPROCS that a process running backups and restores
// should use when the Go runtime's default is cpus: cpus, plus one for
// each read of a volume that may be in flight.
//
// Why more Ps than CPUs: a goroutine in a blocking system call (a direct
// read of a clone, a pack write, an fsync) keeps its P until the
// runtime's monitor takes it back, which happens up to 10 ms later when
// the monitor has backed off. With one P per CPU, the CPUs then idle while
// chunks wait to be hashed, compressed and sealed. The extra Ps cost
// nothing while no goroutine blocks: the CPU-bound goroutines still number
// Options.Workers. Measured with bench/backup.sh's image (2 GiB, 2 CPUs,
// 5 alternating rounds): the full backup took a median 1.62 s with 2 Ps,
// the CPUs idle or waiting for I/O for 0.5-0.7 s of it, 1.44 s with 4 Ps
// and 1.41 s with 6, idle for 0.1-0.2 s.
func Procs(cpus int) int { return cpus + readers }
