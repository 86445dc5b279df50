package main

import "testing"

func TestGomaxprocs(t *testing.T) {
	for _, tc := range []struct {
		env       string
		def, want int
	}{
		{"", 2, 4},   // default: 2 more than the CPUs, for goroutines blocked in I/O
		{"", 16, 18}, // the same on a larger machine
		{"3", 3, 3},  // set in the environment: kept
		{"1", 1, 1},
	} {
		if got := gomaxprocs(tc.env, tc.def); got != tc.want {
			t.Errorf("gomaxprocs(%q, %d) = %d, want %d", tc.env, tc.def, got, tc.want)
		}
	}
}
