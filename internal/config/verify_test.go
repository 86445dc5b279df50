package config

import (
	"strings"
	"testing"
	"time"
)

// TestVerifyKeys: verify.schedule as an interval, a recurrence or off,
// verify.max_age, their defaults, and refusals that name the key.
func TestVerifyKeys(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 5, 1, 2, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		name   string
		env    []string
		next   time.Time // zero: off
		maxAge time.Duration
		err    string
	}{
		{"default", nil, time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC), 168 * time.Hour, ""},
		// An interval's runs fall on its multiples of the day, the same
		// for every process of a cluster.
		{"interval", []string{"CSBS_VERIFY_SCHEDULE=6h", "CSBS_VERIFY_MAX_AGE=24h"}, time.Date(2026, 5, 1, 6, 0, 0, 0, time.UTC), 24 * time.Hour, ""},
		{"interval of 90m", []string{"CSBS_VERIFY_SCHEDULE=90m"}, time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC), 168 * time.Hour, ""},
		{"rrule", []string{"CSBS_VERIFY_SCHEDULE=FREQ=WEEKLY;BYDAY=SU;BYHOUR=4;BYMINUTE=15"}, time.Date(2026, 5, 3, 4, 15, 0, 0, time.UTC), 168 * time.Hour, ""},
		{"off", []string{"CSBS_VERIFY_SCHEDULE=off"}, time.Time{}, 168 * time.Hour, ""},
		{"empty is off", []string{"CSBS_VERIFY_SCHEDULE="}, time.Time{}, 168 * time.Hour, ""},

		{"interval too short", []string{"CSBS_VERIFY_SCHEDULE=10ms"}, time.Time{}, 0, "verify.schedule"},
		{"not a schedule", []string{"CSBS_VERIFY_SCHEDULE=nightly"}, time.Time{}, 0, "verify.schedule"},
		{"rrule too often", []string{"CSBS_VERIFY_SCHEDULE=FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0,30"}, time.Time{}, 0, "verify.schedule"},
		{"rrule monthly", []string{"CSBS_VERIFY_SCHEDULE=FREQ=MONTHLY;BYHOUR=1;BYMINUTE=0"}, time.Time{}, 0, "verify.schedule"},
		{"max_age zero", []string{"CSBS_VERIFY_MAX_AGE=0s"}, time.Time{}, 0, "verify.max_age"},
		{"max_age garbage", []string{"CSBS_VERIFY_MAX_AGE=weekly"}, time.Time{}, 0, "VERIFY_MAX_AGE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load("", c.env, nil)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Load = %v; want an error naming %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s, err := cfg.Verify.ParseSchedule()
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Next(at); !got.Equal(c.next) || s.Off() != c.next.IsZero() {
				t.Errorf("next run after %v = %v (off %v), want %v", at, got, s.Off(), c.next)
			}
			if cfg.Verify.MaxAge != c.maxAge {
				t.Errorf("max_age = %v, want %v", cfg.Verify.MaxAge, c.maxAge)
			}
		})
	}
}
