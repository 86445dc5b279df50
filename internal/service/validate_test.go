package service

import (
	"strings"
	"testing"

	"github.com/csbs/csbs/internal/store"
)

func TestValidateName(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "backup", true},
		{"all allowed characters", "Ab-9_z", true},
		{"255 characters", strings.Repeat("a", 255), true},
		{"empty", "", false},
		{"256 characters", strings.Repeat("a", 256), false},
		{"space", "my backup", false},
		{"dot", "a.b", false},
		{"non-ASCII letter", "sauvegardé", false},
		{"angle bracket", "a<b", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateName("backup_name", tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil {
				e, _ := AsError(err)
				if e.Code != CodeInvalidParam || e.Status != 400 || !strings.Contains(e.Msg, "backup_name") {
					t.Fatalf("refusal %+v must be a 400 %s naming backup_name", e, CodeInvalidParam)
				}
			}
		})
	}
}

func TestValidateDescription(t *testing.T) {
	cases := []struct {
		in string
		ok bool
	}{
		{"", true},
		{"backup des", true},
		{strings.Repeat("é", 255), true},
		{strings.Repeat("x", 256), false},
		{"a > b", false},
		{"<script>", false},
	}
	for _, tc := range cases {
		err := ValidateDescription("description", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateDescription(%.20q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestNormalizeTags(t *testing.T) {
	tag := func(k, v string) store.Tag { return store.Tag{Key: k, Value: v} }
	eleven := make([]store.Tag, 11)
	for i := range eleven {
		eleven[i] = tag(string(rune('a'+i)), "v")
	}
	cases := []struct {
		name     string
		in       []store.Tag
		want     []store.Tag
		wantCode string
	}{
		{"absent", nil, nil, ""},
		{"trimmed", []store.Tag{tag("  env ", " prod  ")}, []store.Tag{tag("env", "prod")}, ""},
		{"empty value allowed", []store.Tag{tag("k", "")}, []store.Tag{tag("k", "")}, ""},
		{"ten tags", eleven[:10], eleven[:10], ""},
		{"empty list", []store.Tag{}, nil, CodeInvalidParam},
		{"eleven tags", eleven, nil, CodeTagLimit},
		{"empty key", []store.Tag{tag("  ", "v")}, nil, CodeInvalidParam},
		{"key 36", []store.Tag{tag(strings.Repeat("k", 36), "v")}, []store.Tag{tag(strings.Repeat("k", 36), "v")}, ""},
		{"key 37", []store.Tag{tag(strings.Repeat("k", 37), "v")}, nil, CodeInvalidParam},
		{"value 43", []store.Tag{tag("k", strings.Repeat("v", 43))}, []store.Tag{tag("k", strings.Repeat("v", 43))}, ""},
		{"value 44", []store.Tag{tag("k", strings.Repeat("v", 44))}, nil, CodeInvalidParam},
		{"bad key char", []store.Tag{tag("a.b", "v")}, nil, CodeInvalidParam},
		{"bad value char", []store.Tag{tag("k", "a b")}, nil, CodeInvalidParam},
		{"duplicate keys after trim", []store.Tag{tag("k", "1"), tag(" k", "2")}, nil, CodeInvalidParam},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NormalizeTags("tags", tc.in)
			if tc.wantCode != "" {
				e, ok := AsError(err)
				if !ok || e.Code != tc.wantCode {
					t.Fatalf("got %v, want code %s", err, tc.wantCode)
				}
				if !strings.Contains(e.Msg, "tags") {
					t.Fatalf("message %q does not name the field", e.Msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestCheckpointStatus(t *testing.T) {
	items := func(st ...string) []*store.Item {
		out := make([]*store.Item, len(st))
		for i, s := range st {
			out[i] = &store.Item{Status: s}
		}
		return out
	}
	cases := []struct {
		in   []*store.Item
		want string
	}{
		{items(store.StatusWaitingProtect), store.StatusProtecting},
		{items(store.StatusAvailable, store.StatusProtecting), store.StatusProtecting},
		{items(store.StatusAvailable, store.StatusError), store.StatusError},
		{items(store.StatusAvailable, store.StatusAvailable), store.StatusAvailable},
		{items(store.StatusAvailable, store.StatusDeleting), store.StatusDeleting},
		{items(store.StatusRestoring), store.StatusRestoring},
		{items(), store.StatusDeleted},
	}
	for _, tc := range cases {
		if got := CheckpointStatus(tc.in); got != tc.want {
			t.Errorf("CheckpointStatus(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestSavingRatio(t *testing.T) {
	cases := []struct {
		used, stored int64
		want         int
	}{
		{0, 0, 0}, {100, 100, 0}, {100, 25, 75}, {100, 0, 100}, {100, 150, 0},
	}
	for _, tc := range cases {
		if got := savingRatio(tc.used, tc.stored); got != tc.want {
			t.Errorf("savingRatio(%d, %d) = %d, want %d", tc.used, tc.stored, got, tc.want)
		}
	}
}
