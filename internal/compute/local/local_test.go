package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/compute"
)

// writeImage creates an image file of size bytes filled with b.
func writeImage(t *testing.T, path string, size int, b byte) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Repeat(string(b), size)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newInventory writes inv to dir/servers.yaml and opens a driver on it.
func newInventory(t *testing.T, dir string, inv Inventory) (*Driver, string) {
	t.Helper()
	path := filepath.Join(dir, "servers.yaml")
	if err := WriteInventory(path, inv); err != nil {
		t.Fatal(err)
	}
	d, err := New(path, WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	return d, path
}

func server(id, project string, vols ...VolumeSpec) ServerSpec {
	return ServerSpec{ID: id, Name: "name-" + id, ProjectID: project, Status: "ACTIVE", Volumes: vols}
}

func ids(servers []compute.Server) string {
	var s []string
	for _, srv := range servers {
		s = append(s, srv.ID)
	}
	return strings.Join(s, ",")
}

func TestNewFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("servers:\n  - {id: s1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"invalid file", bad, "project_id is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestProjectScoping(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	writeImage(t, img, 3000, 'a')
	d, _ := newInventory(t, dir, Inventory{Servers: []ServerSpec{
		server("s1", "p1", VolumeSpec{ID: "v1", Path: img}),
		server("s2", "p2"),
		server("s3", "p1", VolumeSpec{ID: "v3", Path: "missing.img"}),
	}})

	listTests := []struct{ project, want string }{
		{"p1", "s1,s3"},
		{"p2", "s2"},
		{"p3", ""},
		{"", "s1,s2,s3"},
	}
	for _, tt := range listTests {
		got, err := d.Servers(ctx, tt.project)
		if err != nil {
			t.Fatal(err)
		}
		if ids(got) != tt.want {
			t.Errorf("Servers(%q) = %s, want %s", tt.project, ids(got), tt.want)
		}
	}

	getTests := []struct {
		project, id string
		found       bool
	}{
		{"p1", "s1", true},
		{"p2", "s1", false}, // another project's server is not found
		{"p1", "s2", false},
		{"p1", "nope", false},
		{"", "s2", true},
	}
	for _, tt := range getTests {
		s, err := d.Server(ctx, tt.project, tt.id)
		switch {
		case tt.found && err != nil:
			t.Errorf("Server(%q, %q): %v", tt.project, tt.id, err)
		case tt.found && s.ID != tt.id:
			t.Errorf("Server(%q, %q) returned %q", tt.project, tt.id, s.ID)
		case !tt.found && !errors.Is(err, compute.ErrNotFound):
			t.Errorf("Server(%q, %q) = %v, want ErrNotFound", tt.project, tt.id, err)
		}
	}

	// Sizes are measured at query time; a missing image reads as 0.
	s1, _ := d.Server(ctx, "p1", "s1")
	if got := s1.Volumes[0].Size; got != 3000 {
		t.Errorf("size of v1 = %d, want 3000", got)
	}
	writeImage(t, img, 5000, 'a')
	s1, _ = d.Server(ctx, "p1", "s1")
	if got := s1.Volumes[0].Size; got != 5000 {
		t.Errorf("size of v1 after growing = %d, want 5000", got)
	}
	s3, _ := d.Server(ctx, "p1", "s3")
	if got := s3.Volumes[0].Size; got != 0 {
		t.Errorf("size of a missing image = %d, want 0", got)
	}
	if want := filepath.Join(dir, "missing.img"); s3.Volumes[0].Path != want {
		t.Errorf("relative path resolved to %q, want %q", s3.Volumes[0].Path, want)
	}

	// Callers get copies: changing one does not change the driver's state.
	s1.Volumes[0].Path = "/changed"
	s1.StopCommand = append(s1.StopCommand, "x")
	again, _ := d.Server(ctx, "p1", "s1")
	if again.Volumes[0].Path != img {
		t.Errorf("caller's change leaked into the driver: path %q", again.Volumes[0].Path)
	}
}

func TestReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, path := newInventory(t, dir, Inventory{Servers: []ServerSpec{server("s1", "p1")}})

	// An atomic rewrite is picked up on the next call.
	if err := WriteInventory(path, Inventory{Servers: []ServerSpec{server("s1", "p1"), server("s2", "p1")}}); err != nil {
		t.Fatal(err)
	}
	assertServers(t, d, "s1,s2")
	if err := d.Err(); err != nil {
		t.Errorf("Err after a good reload: %v", err)
	}

	// So is an in-place rewrite.
	if err := os.WriteFile(path, []byte("servers:\n  - {id: s3, project_id: p1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	assertServers(t, d, "s3")

	// An invalid rewrite keeps the last good inventory and says why.
	if err := os.WriteFile(path, []byte("servers:\n  - {id: s4, project_id: p1}\n  - {id: s4, project_id: p1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	assertServers(t, d, "s3")
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), `id "s4" is already used`) {
		t.Errorf("Err = %v, want the duplicate id", err)
	}
	if _, err := d.Server(ctx, "p1", "s3"); err != nil {
		t.Errorf("last good server gone: %v", err)
	}

	// A removed file keeps the last good inventory too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	assertServers(t, d, "s3")
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Err = %v, want the missing file", err)
	}

	// Fixing the file clears the error.
	if err := WriteInventory(path, Inventory{Servers: []ServerSpec{server("s5", "p1")}}); err != nil {
		t.Fatal(err)
	}
	assertServers(t, d, "s5")
	if err := d.Err(); err != nil {
		t.Errorf("Err after fixing the file: %v", err)
	}
}

func assertServers(t *testing.T, d *Driver, want string) {
	t.Helper()
	got, err := d.Servers(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != want {
		t.Errorf("servers = %s, want %s", ids(got), want)
	}
}

func TestRunCommand(t *testing.T) {
	d, _ := newInventory(t, t.TempDir(), Inventory{})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		argv    []string
		wantErr []string // substrings; nil = success
		notIn   []string // substrings the error must not contain
	}{
		{name: "empty argv", argv: nil},
		{name: "success", argv: []string{"true"}},
		{name: "no shell", argv: []string{"echo", "$HOME;", "false"}},
		{
			name:    "failure with output",
			argv:    []string{"sh", "-c", "echo boom >&2; exit 3", "secret-token"},
			wantErr: []string{"command sh", "exit status 3", "boom"},
			notIn:   []string{"secret-token"},
		},
		{
			name:    "long output is trimmed to its tail",
			argv:    []string{"sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x; echo END; exit 1"},
			wantErr: []string{"xxx", "END"},
		},
		{name: "unknown program", argv: []string{"/nonexistent/csbs-test"}, wantErr: []string{"no such file"}},
		{name: "canceled", ctx: canceled, argv: []string{"sleep", "10"}, wantErr: []string{"context canceled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			err := d.RunCommand(ctx, tt.argv)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("RunCommand: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("RunCommand succeeded, want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, w := range tt.notIn {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q contains %q", err, w)
				}
			}
			if len(err.Error()) > maxOutput+200 {
				t.Errorf("error is %d bytes long, want it trimmed", len(err.Error()))
			}
		})
	}
}

// TestConcurrentReload reads the inventory from several goroutines while it
// is being rewritten; run with -race.
func TestConcurrentReload(t *testing.T) {
	dir := t.TempDir()
	d, path := newInventory(t, dir, Inventory{Servers: []ServerSpec{server("s0", "p1")}})
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				got, err := d.Servers(context.Background(), "p1")
				if err != nil || len(got) != 1 {
					errs <- fmt.Errorf("Servers = %d servers, %v; want 1", len(got), err)
					return
				}
			}
		}()
	}
	for i := 1; i <= 50; i++ {
		if err := WriteInventory(path, Inventory{Servers: []ServerSpec{server(fmt.Sprint("s", i), "p1")}}); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	assertServers(t, d, "s50")
}
