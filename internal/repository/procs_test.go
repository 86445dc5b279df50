package repository

import "testing"

func TestProcs(t *testing.T) {
	for _, tc := range []struct {
		env       string
		cur, want int
	}{
		{"", 2, 4},   // default: 2 more than the CPUs, for goroutines blocked in I/O
		{"", 16, 18}, // the same on a larger machine
		{"3", 3, 3},  // set in the environment: kept
		{"1", 1, 1},
	} {
		if got := Procs(tc.env, tc.cur); got != tc.want {
			t.Errorf("Procs(%q, %d) = %d, want %d", tc.env, tc.cur, got, tc.want)
		}
	}
}
