package main

import "testing"

func TestListenAddress(t *testing.T) {
	for _, tc := range []struct {
		in            string
		remote        bool
		network, addr string
		ok            bool
	}{
		{"unix:/run/x.sock", false, "unix", "/run/x.sock", true},
		{"unix:", false, "", "", false},
		{"127.0.0.1:10809", false, "tcp", "127.0.0.1:10809", true},
		{"[::1]:10809", false, "tcp", "[::1]:10809", true},
		{"localhost:10809", false, "tcp", "localhost:10809", true},
		{"0.0.0.0:10809", false, "", "", false},
		{"192.0.2.1:10809", false, "", "", false},
		{"192.0.2.1:10809", true, "tcp", "192.0.2.1:10809", true},
		{"nonsense", false, "", "", false},
	} {
		n, a, err := listenAddress(tc.in, tc.remote)
		if (err == nil) != tc.ok || n != tc.network || a != tc.addr {
			t.Errorf("listenAddress(%q, %v) = %q, %q, %v", tc.in, tc.remote, n, a, err)
		}
	}
}
